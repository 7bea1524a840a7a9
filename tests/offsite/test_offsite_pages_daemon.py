"""Disaster recovery of incremental backups through a real daemon (issue 16): the daemon backs
up two databases with an incremental policy (a writer process committing meanwhile) and its
upload job sends the page stores age-encrypted to the session's SeaweedFS; the host is lost;
with only the configuration, the identity and the bucket, `restore --latest --from-offsite`
brings both databases back as they were at the newest backup."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from pyrage import x25519

from support.cli import clean_env, run_cli
from support.daemon import DaemonRunner, quiet_config, write_config
from support.databases import Writer, dump, integrity, make_db
from support.metrics import sample
from support.offsite import fast_retry, s3_store
from support.offsite_pages import confirmed_manifests
from support.seaweed import SeaweedServer
from support.waiting import wait_until


def test_a_daemons_incremental_uploads_restore_a_lost_host(
    daemons: DaemonRunner,
    tmp_path: Path,
    sock_dir: Path,
    seaweed: SeaweedServer,
    shared_bucket: str,
) -> None:
    """Two incremental backups through the socket (the first with a writer committing; each
    waits for the start's catch-up backup), both confirmed offsite by the daemon's upload job
    (pending 0, the policy's last success set); the daemon stopped, the data and backup
    directories deleted; `restore --latest --from-offsite --force` restores both databases
    from the second backup: equal dumps, integrity ok."""
    host = tmp_path / "host"
    dbs = {
        "user": make_db(host / "data" / "user.db", wal=True, rows=400),
        "audit": make_db(host / "data" / "audit.db", wal=False, rows=100),
    }
    identity = x25519.Identity.generate()
    key = tmp_path / "kept" / "age.txt"
    key.parent.mkdir()
    key.write_text(f"{identity}\n")
    key.chmod(0o600)
    prefix = f"pages-daemon-{tmp_path.name}"
    config = quiet_config(
        backup_dir=host / "backups",
        databases=dbs,
        socket_path=sock_dir / "control.sock",
        metrics={"enabled": True, "host": "127.0.0.1", "port": 0},
        policies={
            "pre_restore": {"keep": 10},
            "hourly": {"every": "1h", "keep": 5, "mode": "incremental"},
        },
        offsite={
            "url": f"s3://{shared_bucket}/{prefix}",
            "endpoint": seaweed.endpoint,
            "path_style": True,
            "encryption": {"recipients": [str(identity.to_public())], "identity_file": str(key)},
        },
    )
    (host / "backups").mkdir()
    d = daemons.start(config, env=seaweed.env())
    writer = Writer.start(dbs["user"], rate=100)
    try:
        first = d.request("backup", policy="hourly", wait=True)["archive"]
    finally:
        writer.stop()
    conn = sqlite3.connect(dbs["audit"])
    conn.execute("UPDATE items SET body = body || '!' WHERE id % 2 = 0")
    conn.commit()
    conn.close()
    second = d.request("backup", policy="hourly", wait=True)["archive"]
    wanted = {name: dump(path) for name, path in dbs.items()}
    store = s3_store(seaweed, shared_bucket, prefix, retry=fast_retry())
    both = {f"{db}/{n}" for db in dbs for n in (first, second)}
    wait_until(lambda: confirmed_manifests(store) >= both, what="both backups offsite")
    wait_until(
        lambda: sample(d.scrape(), "backup_sidecar_offsite_pending_archives") == 0,
        what="nothing pending",
    )
    name = "backup_sidecar_offsite_last_success_timestamp_seconds"
    assert (sample(d.scrape(), name, policy="hourly") or 0) > 0
    assert d.stop() == 0

    shutil.rmtree(host)
    kept = write_config(tmp_path / "kept" / "sidecar.yaml", config)
    env = clean_env(**seaweed.env())
    done = run_cli("restore", "--latest", "--from-offsite", "--force", config=kept, env=env)
    assert done.returncode == 0, done.stderr
    for db, path in dbs.items():
        assert dump(path) == wanted[db]
        assert integrity(path) == "ok"
