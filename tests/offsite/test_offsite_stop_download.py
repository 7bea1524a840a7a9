"""SIGTERM while the daemon downloads from an endpoint that stalls mid-GET: it stops within its
grace period (not after the request timeout), publishes nothing and leaves the live database
as it was."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backup_sidecar.errors import OffsiteDownloadAbandonedError
from backup_sidecar.offsite import Lease, Store, parse_target, resolve_credentials
from support.daemon import DaemonRunner, quiet_config
from support.databases import dump, integrity, make_db
from support.offsite import MiB, archive_file, fast_retry, s3_store
from support.seaweed import SeaweedServer
from support.stalling_proxy import StallingProxy
from support.waiting import wait_until

GRACE_S = 2.0
NAME = "user-daily-20261207T090000Z.tar.gz"


@pytest.fixture
def proxy(seaweed: SeaweedServer) -> Iterator[StallingProxy]:
    stalling = StallingProxy(seaweed.endpoint)
    yield stalling
    stalling.close()


def test_sigterm_abandons_a_stalled_offsite_restore_within_the_grace_period(
    daemons: DaemonRunner,
    tmp_path: Path,
    sock_dir: Path,
    seaweed: SeaweedServer,
    shared_bucket: str,
    proxy: StallingProxy,
) -> None:
    """The archive is offsite only; `restore` from offsite (latest) starts and the endpoint
    stalls after the first bytes of the GET (a proxy that stops forwarding); SIGTERM with a 2 s
    grace period: the daemon exits 0 within grace + 8 s (it waited out the 60 s request timeout
    before), the client is told the download was abandoned, no archive or partial download is
    left in the backup directory and the live database is unchanged."""
    user = make_db(tmp_path / "data" / "user_data.db", wal=True, rows=3000, tag="user")
    (tmp_path / "backups").mkdir()
    prefix = f"stall-{tmp_path.name}"
    config = quiet_config(
        backup_dir=tmp_path / "backups",
        databases={"user": user},
        socket_path=sock_dir / "control.sock",
        grace_period=f"{GRACE_S:g}s",
        policies={"daily": {"keep": 5}},
        offsite={
            "url": f"s3://{shared_bucket}/{prefix}",
            "endpoint": proxy.endpoint,
            "path_style": True,
            "attempts": 1,
        },
    )
    d = daemons.start(config, env=seaweed.env())
    store = s3_store(seaweed, shared_bucket, prefix, retry=fast_retry())
    name = d.request("backup", policy="daily")["archive"]  # (latest: configured policies only)
    wait_until(
        lambda: f"{name}.tar.gz" in {o.name for o in store.list().objects if o.confirmed},
        what="the backup confirmed offsite",
    )
    (d.backup_dir / f"{name}.tar.gz").unlink()
    make_db(user.with_name("scratch.db"), wal=False, rows=3, tag="changed").replace(user)
    live = dump(user)

    proxy.arm(".tar.gz")
    answer: list[BaseException | dict[str, object]] = []
    latest: dict[str, Any] = {"from": "offsite", "latest": True, "confirm": True}

    def restore() -> None:
        try:
            answer.append(d.request("restore", **latest))
        except BaseException as exc:  # noqa: BLE001 - the test reads it below
            answer.append(exc)

    client = threading.Thread(target=restore)
    client.start()
    wait_until(proxy.stalled.is_set, what="the download to stall in the proxy")
    d.signal(signal.SIGTERM)
    sent = time.monotonic()
    assert d.wait_exit(timeout=150) == 0
    elapsed = time.monotonic() - sent
    client.join(timeout=30)
    assert elapsed < GRACE_S + 8.0, f"stopping took {elapsed:.1f}s with a {GRACE_S:g}s grace"
    assert d.log.find("grace_period_expired")
    assert len(answer) == 1 and "abandoned" in str(answer[0]), answer
    left = sorted(p.relative_to(d.backup_dir) for p in d.backup_dir.rglob("*") if p.is_file())
    assert not [p for p in left if name in str(p) or "offsite-part" in str(p)], left
    assert dump(user) == live and integrity(user) == "ok"


def test_a_cancelled_download_from_a_stalled_endpoint_stops_at_once_leaving_nothing(
    seaweed: SeaweedServer, shared_bucket: str, proxy: StallingProxy, tmp_path: Path
) -> None:
    """The library call the daemon's restore and offsite verify make: `Store.download` with
    `cancel`, the GET stalled after its first bytes; once `cancel()` is true it raises
    OffsiteDownloadAbandonedError within a second (not after the 60 s request timeout) and
    leaves no file, partial or whole, beside the destination."""
    prefix = f"cancel-{tmp_path.name}"
    target = s3_store(seaweed, shared_bucket, prefix, retry=fast_retry())
    source = archive_file(tmp_path, NAME, 2 * MiB)
    target.upload(source, lease=_held(target))
    through = Store(
        parse_target(f"s3://{shared_bucket}/{prefix}", endpoint=proxy.endpoint, path_style=True),
        credentials=resolve_credentials(seaweed.env()),
    )
    proxy.arm(".tar.gz")
    stop = threading.Event()
    (tmp_path / "out").mkdir()
    dest = tmp_path / "out" / NAME
    failure: list[BaseException] = []

    def fetch() -> None:
        try:
            through.download(NAME, dest, cancel=stop.is_set)
        except BaseException as exc:  # noqa: BLE001 - the test reads it below
            failure.append(exc)

    worker = threading.Thread(target=fetch)
    worker.start()
    wait_until(proxy.stalled.is_set, what="the download to stall in the proxy")
    stop.set()
    cancelled = time.monotonic()
    worker.join(timeout=60)
    assert time.monotonic() - cancelled < 1.0
    assert len(failure) == 1 and isinstance(failure[0], OffsiteDownloadAbandonedError), failure
    assert NAME in str(failure[0]) and "stopping" in str(failure[0])
    assert list((tmp_path / "out").iterdir()) == []


def _held(store: Store) -> Lease:
    lease = Lease(store, ttl=300)
    assert lease.acquire().writable
    return lease
