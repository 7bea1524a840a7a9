"""The scheduled offsite verify in a real daemon against the session's SeaweedFS: on its
schedule the newest copy is downloaded, decrypted and verified (metrics say so); a tampered
copy is found and counted; the alarm clears once a good newest copy is verified; without the
identity file the daemon says `skipped`, once."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import obstore
from pyrage import x25519

from backup_sidecar.offsite import Store
from support.daemon import DaemonRunner, quiet_config
from support.databases import make_db
from support.metrics import sample
from support.offsite import fast_retry, s3_store
from support.seaweed import SeaweedServer
from support.waiting import wait_until

LAST_OK = "backup_sidecar_offsite_verify_last_success_timestamp_seconds"
RUNS = "backup_sidecar_offsite_verify_runs_total"
FAILURES = "backup_sidecar_offsite_verify_failures_total"


def _confirmed(store: Store) -> set[str]:
    return {o.name for o in store.list().objects if o.confirmed}


def test_the_scheduled_verify_finds_a_tampered_copy_and_clears_when_a_good_one_lands(
    daemons: DaemonRunner,
    tmp_path: Path,
    sock_dir: Path,
    seaweed: SeaweedServer,
    shared_bucket: str,
) -> None:
    """verify_every 1s: the uploaded copy is verified (`ok`, last success set). One byte of
    it flipped in the bucket: the next verify fails it as `corrupt`, naming the object, and
    the last success stays where it was, /healthz is 503 naming it. A new backup's copy lands:
    the verify passes again and the reason clears.
    The identity file removed by a reload: verifies are `skipped`, said once in the log."""
    user = make_db(tmp_path / "data" / "user_data.db", wal=True, rows=100)
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    identity = x25519.Identity.generate()
    key_file = tmp_path / "age.key"
    key_file.write_text(f"{identity}\n")
    key_file.chmod(0o600)
    prefix = f"verify-{tmp_path.name}"
    offsite: dict[str, Any] = {
        "url": f"s3://{shared_bucket}/{prefix}",
        "endpoint": seaweed.endpoint,
        "path_style": True,
        "verify_every": "1s",
        "encryption": {
            "recipients": [str(identity.to_public())],
            "identity_file": str(key_file),
        },
    }
    config = quiet_config(
        backup_dir=backup_dir,
        databases={"user": user},
        socket_path=sock_dir / "verify.sock",
        metrics={"enabled": True, "host": "127.0.0.1", "port": 0},
        offsite=offsite,
    )
    d = daemons.start(config, env=seaweed.env())
    store = s3_store(seaweed, shared_bucket, prefix, retry=fast_retry())
    first = d.request("backup")["archive"]
    wait_until(lambda: _confirmed(store) == {f"{first}.tar.gz.age"}, what="the upload")
    verified = wait_until(
        lambda: sample(d.scrape(), LAST_OK, policy="manual"), what="the first offsite verify"
    )
    d.log.wait("offsite_verified", object=f"{first}.tar.gz.age")

    key = store.key(f"{first}.tar.gz.age")
    data = bytearray(obstore.get(store.objects.backend, key).bytes())
    data[len(data) // 2] ^= 0xFF
    obstore.put(store.objects.backend, key, bytes(data))
    wait_until(
        lambda: (sample(d.scrape(), FAILURES, reason="corrupt") or 0) >= 1,
        what="the tampered copy found by the scheduled verify",
    )
    d.log.wait("offsite_verify_failed")  # logged before the count: maybe not read yet
    failed = d.log.find("offsite_verify_failed")
    assert failed and f"{first}.tar.gz.age" in failed[0]["error"], failed
    assert sample(d.scrape(), LAST_OK, policy="manual") == verified
    _code, body = wait_until(
        lambda: (h := d.healthz())[0] == 503 and h, what="/healthz showing the damaged copy"
    )
    assert any(
        "offsite copy of policy 'manual'" in r and f"{first}.tar.gz.age" in r
        for r in body["reasons"]
    ), body

    second = d.request("backup")["archive"]
    wait_until(lambda: f"{second}.tar.gz.age" in _confirmed(store), what="the new backup's upload")
    wait_until(
        lambda: d.log.find("offsite_verified", object=f"{second}.tar.gz.age"),
        what="the new newest copy verified",
    )
    assert (sample(d.scrape(), LAST_OK, policy="manual") or 0) > verified
    wait_until(lambda: d.healthz()[0] == 200, what="the offsite reason cleared")

    offsite["encryption"] = {"recipients": [str(identity.to_public())]}
    d.rewrite_config({**config, "offsite": offsite})
    mark = len(d.log.find("config_reloaded"))
    d.signal(signal.SIGHUP)
    d.log.wait("config_reloaded", count=mark + 1)
    wait_until(
        lambda: (sample(d.scrape(), RUNS, result="skipped") or 0) >= 2,
        what="two verifies skipped without the identity",
    )
    d.log.wait("offsite_verify_skipped")  # logged beside the count: maybe not read yet
    skipped = d.log.find("offsite_verify_skipped")
    assert len(skipped) == 1 and "identity_file" in skipped[0]["reason"], skipped
