"""The daemon's offsite lifecycle against the session's SeaweedFS: stopped mid-upload it
abandons the upload cleanly and releases the lease (a restarted sidecar uploads at once, not
after the TTL); with the endpoint stopped, a backup is made and counted good, the upload is
pending, /healthz says so once offsite.max_age passes, and everything clears when the server
is back and the upload lands."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backup_sidecar.offsite import Lease, Store, parse_target
from support.daemon import DaemonRunner, quiet_config
from support.databases import make_big_db, make_db
from support.metrics import sample
from support.offsite import fast_retry, s3_store
from support.seaweed import SeaweedServer
from support.waiting import wait_until

PENDING = "backup_sidecar_offsite_pending_archives"
LAGGING = "backup_sidecar_offsite_lagging"
LAST = "backup_sidecar_offsite_last_success_timestamp_seconds"


@pytest.fixture
def revived(seaweed: SeaweedServer) -> Iterator[SeaweedServer]:
    """The session's server, which this test stops: it is running again afterwards."""
    try:
        yield seaweed
    finally:
        if seaweed.process is None:
            seaweed.start()


def _confirmed(store: Store) -> set[str]:
    return {o.name for o in store.list().objects if o.confirmed}


def _uploads_under(server: SeaweedServer, bucket: str, prefix: str) -> list[dict[str, Any]]:
    return [u for u in server.pending_uploads(bucket) if u["Key"].startswith(f"{prefix}/")]


@pytest.mark.slow
def test_stopped_mid_upload_the_upload_is_abandoned_and_the_lease_released(
    daemons: DaemonRunner,
    tmp_path: Path,
    sock_dir: Path,
    seaweed: SeaweedServer,
    shared_bucket: str,
) -> None:
    """SIGTERM while a ~96 MiB archive's multipart upload has parts in: the daemon exits 0
    promptly, logs offsite_upload_abandoned, nothing is confirmed and no unfinished upload is
    left. A new daemon (a new lease id; the lease TTL is 10 minutes) uploads it at once,
    never read-only: the old one released the lease."""
    (tmp_path / "data").mkdir()
    db = make_big_db(tmp_path / "data" / "big.db", megabytes=96)
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    prefix = f"stop-{tmp_path.name}"
    config = quiet_config(
        backup_dir=backup_dir,
        databases={"big": db},
        socket_path=sock_dir / "control.sock",
        offsite={
            "url": f"s3://{shared_bucket}/{prefix}",
            "endpoint": seaweed.endpoint,
            "path_style": True,
            "lease_ttl": "10m",
        },
    )
    d = daemons.start(config, env=seaweed.env())
    archive = d.request("backup", timeout=300)["archive"]
    wait_until(
        lambda: any(
            u for u in _uploads_under(seaweed, shared_bucket, prefix)
            if seaweed.client().list_parts(
                Bucket=shared_bucket, Key=u["Key"], UploadId=u["UploadId"]
            ).get("Parts")
        ),
        timeout=120,
        what="the upload under way (a part stored)",
    )  # fmt: skip
    assert d.stop(timeout=60) == 0
    abandoned = d.log.find("offsite_upload_abandoned")
    assert abandoned, d.log.find("offsite_upload_completed")
    store = s3_store(seaweed, shared_bucket, prefix, retry=fast_retry())
    assert _confirmed(store) == set()
    assert _uploads_under(seaweed, shared_bucket, prefix) == []

    again = daemons.start(d.config_path, env=seaweed.env())
    again.log.wait("offsite_upload_completed", timeout=180)
    assert _confirmed(store) == {f"{archive}.tar.gz"}
    assert again.log.find("offsite_read_only") == []
    assert again.stop() == 0


@pytest.mark.slow
def test_the_endpoint_down_during_a_backup_then_back(
    daemons: DaemonRunner,
    tmp_path: Path,
    sock_dir: Path,
    revived: SeaweedServer,
    shared_bucket: str,
) -> None:
    """SeaweedFS stopped: the backup is made and verified at once; the upload is pending and
    its failures counted; /healthz stays 200 until offsite.max_age (5 s) has passed, then is
    503 naming the policy, with backup_sidecar_offsite_lagging at 1. The server restarts: the
    retried pass uploads the archive and the reason, the gauge and pending all clear."""
    server = revived
    user = make_db(tmp_path / "data" / "user_data.db", wal=True, rows=50)
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    prefix = f"down-{tmp_path.name}"
    config = quiet_config(
        backup_dir=backup_dir,
        databases={"user": user},
        socket_path=sock_dir / "control.sock",
        metrics={"enabled": True, "host": "127.0.0.1", "port": 0},
        health={"interval": "1s"},
        offsite={
            "url": f"s3://{shared_bucket}/{prefix}",
            "endpoint": server.endpoint,
            "path_style": True,
            "attempts": 1,
            "max_age": "5s",
        },
    )
    d = daemons.start(config, env=server.env())
    wait_until(
        lambda: (s := d.request("offsite_status"))["writable"] and s["checked_at"]
        and s["last_error"] is None and sample(d.scrape(), LAGGING, policy="manual") == 0,
        what="the first pass (lease taken, nothing pending)",
    )  # fmt: skip
    server.stop()
    reply = d.request("backup")
    archive = reply["archive"]
    listed = d.cli("list", "--json")  # the backup directory as the CLI reads it
    assert listed.returncode == 0, listed.stderr
    statuses = {a["name"]: a["status"] for a in json.loads(listed.stdout)}
    assert statuses[archive] == "verified"
    wait_until(
        lambda: (sample(d.scrape(), PENDING) or 0) >= 1
        and (sample(d.scrape(), "backup_sidecar_offsite_failures_total", reason="unavailable")
             or 0) >= 1,
        what="the upload pending and its failure counted",
    )  # fmt: skip
    _, doc = wait_until(
        lambda: (h := d.healthz())[0] == 503 and h,
        timeout=180,
        what="/healthz 503 once offsite.max_age passed",
    )
    assert any(
        r.startswith("policy 'manual': no archive confirmed offsite for") for r in doc["reasons"]
    ), doc
    assert sample(d.scrape(), LAGGING, policy="manual") == 1

    server.start()
    store = s3_store(server, shared_bucket, prefix, retry=fast_retry())
    wait_until(
        lambda: _confirmed(store) == {f"{archive}.tar.gz"},
        timeout=240,  # the failed passes' backoff reaches 60 s while the server is down
        what="the pending upload completed after the server came back",
    )
    wait_until(lambda: d.healthz()[0] == 200, what="/healthz healthy again")
    scrape = d.scrape()
    assert sample(scrape, PENDING) == 0
    assert sample(scrape, LAGGING, policy="manual") == 0
    assert d.stop() == 0


def test_sighup_drops_a_removed_policys_series_and_a_removed_section_frees_the_lease(
    daemons: DaemonRunner, tmp_path: Path, sock_dir: Path
) -> None:
    """A real daemon on a file:// store (lease_ttl 10m): a SIGHUP removing a policy drops its
    last-success and lagging series at once; one removing the `offsite` section releases the
    prefix's lease (another sidecar takes it at once, not after the TTL), drops every offsite
    series and zeroes pending."""
    user = make_db(tmp_path / "data" / "user_data.db", wal=True, rows=20)
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    url = f"file://{tmp_path / 'offsite'}"
    config = quiet_config(
        backup_dir=backup_dir,
        databases={"user": user},
        socket_path=sock_dir / "control.sock",
        metrics={"enabled": True, "host": "127.0.0.1", "port": 0},
        policies={"pre_restore": {"keep": 10}, "site": {"keep": 5}},
        offsite={"url": url, "lease_ttl": "10m", "max_age": "1h"},
    )
    d = daemons.start(config)
    d.request("backup", policy="site")
    d.request("backup")
    wait_until(
        lambda: (
            sample(d.scrape(), LAST, policy="site") and sample(d.scrape(), LAST, policy="manual")
        ),
        what="both policies' copies confirmed offsite",
    )
    assert sample(d.scrape(), LAGGING, policy="site") == 0
    other = Lease(Store(parse_target(url)), ttl=60)
    assert not other.acquire().writable

    def reload(new: dict[str, Any]) -> None:
        mark = len(d.log.find("config_reloaded"))
        d.rewrite_config(new)
        d.signal(signal.SIGHUP)
        d.log.wait("config_reloaded", count=mark + 1)

    reload({**config, "policies": {"pre_restore": {"keep": 10}}})
    wait_until(
        lambda: (
            sample(d.scrape(), LAST, policy="site") is None
            and sample(d.scrape(), LAGGING, policy="site") is None
        ),
        what="the removed policy's offsite series gone",
    )
    assert sample(d.scrape(), LAST, policy="manual") is not None

    without = {k: v for k, v in config.items() if k != "offsite"}
    reload(without)
    wait_until(lambda: other.acquire().writable, what="the lease released by the reload")
    other.release()
    scrape = d.scrape()
    assert sample(scrape, LAST, policy="manual") is None
    assert sample(scrape, PENDING) == 0
    assert sample(scrape, LAGGING, policy="manual") is None
    assert d.stop() == 0
