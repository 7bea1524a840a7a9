"""The daemon's offsite upload job against the session's SeaweedFS: a dead endpoint never
fails or delays a backup; every verified archive is uploaded (age-encrypted) once the endpoint
answers; what is pending is derived from the bucket, so a restart uploads what it missed."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from pyrage import x25519

from backup_sidecar.offsite import Store
from support.daemon import Daemon, DaemonRunner, quiet_config
from support.databases import make_db
from support.metrics import free_port, sample
from support.offsite import fast_retry, s3_store
from support.seaweed import SeaweedServer
from support.waiting import wait_until


def _confirmed(store: Store) -> set[str]:
    return {o.name for o in store.list().objects if o.confirmed}


def test_uploads_follow_backups_and_a_dead_endpoint_never_fails_one(
    daemons: DaemonRunner,
    tmp_path: Path,
    sock_dir: Path,
    seaweed: SeaweedServer,
    shared_bucket: str,
) -> None:
    """Endpoint dead: the backup succeeds, /healthz stays 200, the failure is counted as
    `unavailable`. After a reload to the live endpoint, the next backup's wake uploads both
    archives as age objects; metrics say so. Stopped, a backup made meanwhile, restarted: the
    new daemon takes the released lease and uploads the missed archive. Restarted once more
    with nothing pending: the last offsite success comes from the bucket."""
    user = make_db(tmp_path / "data" / "user_data.db", wal=True, rows=50)
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    prefix = f"daemon-{tmp_path.name}"
    identity = x25519.Identity.generate()
    offsite: dict[str, Any] = {
        "url": f"s3://{shared_bucket}/{prefix}",
        "endpoint": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "path_style": True,
        "attempts": 1,
        "encryption": {"recipients": [str(identity.to_public())]},
    }
    config = quiet_config(
        backup_dir=backup_dir,
        databases={"user": user},
        socket_path=sock_dir / "control.sock",
        metrics={"enabled": True, "host": "127.0.0.1", "port": 0},
        offsite=offsite,
    )
    d = daemons.start(config, env=seaweed.env())
    first = d.request("backup")["archive"]
    assert (backup_dir / f"{first}.tar.gz").is_file()
    wait_until(
        lambda: (sample(d.scrape(), "backup_sidecar_offsite_failures_total", reason="unavailable")
                 or 0) >= 1,
        what="the dead endpoint's failure counted",
    )  # fmt: skip
    assert d.healthz()[0] == 200
    store = s3_store(seaweed, shared_bucket, prefix, retry=fast_retry())
    assert _confirmed(store) == set()

    offsite["endpoint"] = seaweed.endpoint
    offsite["attempts"] = 5  # a loaded server's transient answer is retried, as by default
    d.rewrite_config({**config, "offsite": offsite})
    mark = len(d.log.find("config_reloaded"))
    d.signal(signal.SIGHUP)
    d.log.wait("config_reloaded", count=mark + 1)
    second = d.request("backup")["archive"]
    wanted = {f"{first}.tar.gz.age", f"{second}.tar.gz.age"}
    wait_until(lambda: _confirmed(store) == wanted, what="both archives confirmed offsite")
    wait_until(
        lambda: sample(d.scrape(), "backup_sidecar_offsite_pending_archives") == 0,
        what="nothing pending",
    )
    scrape = d.scrape()
    assert (sample(scrape, "backup_sidecar_offsite_upload_bytes_total") or 0) > 0
    last = sample(scrape, "backup_sidecar_offsite_last_success_timestamp_seconds", policy="manual")
    assert last is not None and last > 0
    assert d.stop() == 0

    missed = d.cli("backup", "--json")
    assert missed.returncode == 0, missed.stderr
    names = {p.name for p in backup_dir.glob("*.tar.gz")}
    assert len(names) == 3
    restarted = daemons.start(d.config_path, env=seaweed.env())
    wait_until(
        lambda: _confirmed(store) == {f"{n}.age" for n in names},
        what="the archive made while the daemon was down uploaded after its restart",
    )
    assert restarted.stop() == 0
    idle = daemons.start(d.config_path, env=seaweed.env())
    newest = max(o.modified for o in store.list().objects if o.confirmed).timestamp()
    name = "backup_sidecar_offsite_last_success_timestamp_seconds"
    seeded = wait_until(
        lambda: sample(idle.scrape(), name, policy="manual"),
        what="the last offsite success seeded from the bucket, nothing uploaded",
    )
    assert seeded == newest
    assert idle.log.find("offsite_upload_completed") == []


def test_two_daemons_on_one_prefix_one_writes_the_other_stays_read_only(
    daemons: DaemonRunner,
    tmp_path: Path,
    sock_dir: Path,
    seaweed: SeaweedServer,
    shared_bucket: str,
) -> None:
    """Two sidecars configured with the same prefix: the first holds the lease and uploads;
    the second logs `offsite_read_only` naming the holder, once, and uploads nothing."""
    prefix = f"shared-{tmp_path.name}"
    offsite = {
        "url": f"s3://{shared_bucket}/{prefix}",
        "endpoint": seaweed.endpoint,
        "path_style": True,
    }
    store = s3_store(seaweed, shared_bucket, prefix, retry=fast_retry())

    def start(site: str) -> Daemon:
        user = make_db(tmp_path / site / "data" / "user_data.db", wal=True, rows=20)
        backup_dir = tmp_path / site / "backups"
        backup_dir.mkdir()
        config = quiet_config(
            backup_dir=backup_dir,
            databases={"user": user},
            socket_path=sock_dir / f"{site}.sock",
            metrics={"enabled": True, "host": "127.0.0.1", "port": 0},
            offsite=offsite,
            # each site's own policy: archive names of the two never collide (default names
            # are per second, and a name the bucket holds counts as uploaded)
            policies={"pre_restore": {"keep": 100}, f"site_{site}": {"keep": 5}},
        )
        return daemons.start(config, env=seaweed.env())

    a = start("a")
    first = a.request("backup", policy="site_a")["archive"]
    wait_until(lambda: _confirmed(store) == {f"{first}.tar.gz"}, what="a's upload")
    b = start("b")
    read_only = b.log.wait("offsite_read_only")
    assert f"pid {a.proc.pid} " in read_only["holder"], read_only
    second = b.request("backup", policy="site_b")["archive"]
    b.request("backup", policy="site_b")
    try:
        wait_until(
            lambda: sample(b.scrape(), "backup_sidecar_offsite_pending_archives") == 2,
            what="b's passes after its backups: two archives pending, none uploaded",
        )
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}; pending now: "
            f"{sample(b.scrape(), 'backup_sidecar_offsite_pending_archives')}, b's archives: "
            f"{[(a['name'], a['status']) for a in b.request('list')['archives']]}, b's failures: "
            f"{b.log.find('offsite_upload_failed')}"
        ) from None
    assert len(b.log.find("offsite_read_only")) == 1
    assert b.log.find("offsite_upload_completed") == []
    assert _confirmed(store) == {f"{first}.tar.gz"}
    assert second
