"""Offsite retention in real daemons against the session's SeaweedFS: each upload pass prunes
the holder's own policy to its `offsite.keep`, uploads nothing it would prune at once, and two
sidecars on one prefix never prune each other's copies."""

from __future__ import annotations

from pathlib import Path

from backup_sidecar.offsite import Store
from support.daemon import Daemon, DaemonRunner, quiet_config
from support.databases import make_db
from support.metrics import sample
from support.offsite import fast_retry, s3_store
from support.seaweed import SeaweedServer
from support.waiting import wait_until


def _confirmed(store: Store) -> set[str]:
    return {o.name for o in store.list().objects if o.confirmed}


def test_each_sidecar_prunes_only_its_own_policy_on_a_shared_prefix(
    daemons: DaemonRunner,
    tmp_path: Path,
    sock_dir: Path,
    seaweed: SeaweedServer,
    shared_bucket: str,
) -> None:
    """a (offsite keep 1 of site_a, local keep 5) backs up three times: after each pass only
    the newest copy is offsite, each archive uploaded once (the older local ones are not
    pending, so never uploaded again to be pruned again), the deletions counted. b, on the same
    prefix, is read-only while a runs and deletes nothing. Once a stops, b takes the lease,
    uploads its newest and prunes its own policy to one copy, and a's copy is still there."""
    prefix = f"retention-{tmp_path.name}"
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
            offsite={
                "url": f"s3://{shared_bucket}/{prefix}",
                "endpoint": seaweed.endpoint,
                "path_style": True,
                "keep": {f"site_{site}": 1},
            },
            policies={"pre_restore": {"keep": 100}, f"site_{site}": {"keep": 5}},
        )
        return daemons.start(config, env=seaweed.env())

    a = start("a")
    made = []
    for _ in range(3):
        made.append(a.request("backup", policy="site_a")["archive"])
        wait_until(
            lambda: _confirmed(store) == {f"{made[-1]}.tar.gz"},
            what=f"only {made[-1]} offsite (two made in one second: ordered by sequence)",
        )
    assert len(list(a.backup_dir.glob("*.tar.gz"))) == 3
    wait_until(
        lambda: sample(a.scrape(), "backup_sidecar_offsite_pruned_total", policy="site_a") == 2,
        what="a's two deletions counted",
    )
    assert sample(a.scrape(), "backup_sidecar_offsite_pending_archives") == 0
    a.log.wait("offsite_upload_completed", count=len(made))  # logged before the prune counts
    uploaded = [e["archive"] for e in a.log.find("offsite_upload_completed")]
    assert sorted(uploaded) == sorted(made)

    b = start("b")
    b.log.wait("offsite_read_only")
    b_first = b.request("backup", policy="site_b")["archive"]
    wait_until(
        lambda: sample(b.scrape(), "backup_sidecar_offsite_pending_archives") == 1,
        what="b's archive pending while a holds the prefix",
    )
    assert b.log.find("offsite_pruned") == []
    assert _confirmed(store) == {f"{made[-1]}.tar.gz"}

    assert a.stop() == 0  # releases the lease
    b_second = b.request("backup", policy="site_b")["archive"]
    wait_until(
        lambda: _confirmed(store) == {f"{made[-1]}.tar.gz", f"{b_second}.tar.gz"},
        what="b's newest uploaded, a's copy kept",
    )
    assert f"{b_first}.tar.gz" not in {o.name for o in store.list().objects}
    assert all(e["policy"] != "site_a" for e in b.log.find("offsite_pruned"))
