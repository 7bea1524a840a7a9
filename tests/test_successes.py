"""The ledger of each policy's last success against what the backup directory holds."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry

from backup_sidecar.archiver import ArchiveInfo, ArchiveStatus
from backup_sidecar.service.metrics import Metrics
from backup_sidecar.service.successes import SuccessLedger

T0 = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
LAST = "backup_sidecar_backup_last_success_timestamp_seconds"


def archive(name: str, policy: str, at: datetime) -> ArchiveInfo:
    return ArchiveInfo(
        name=name,
        path=Path(f"/b/{name}.tar.gz"),
        size_bytes=1,
        created_at=at,
        status=ArchiveStatus.VERIFIED,
        policy=policy,
    )


def last(registry: CollectorRegistry, policy: str) -> float | None:
    return registry.get_sample_value(LAST, {"policy": policy})


def test_a_success_published_after_the_listing_is_not_undone_by_it() -> None:
    """A backup recorded between a listing and its sync is not taken as deleted (the listing
    predates it); only a second listing without it resets the policy to "never"."""
    registry = CollectorRegistry()
    metrics = Metrics(registry, version="t", policies=["daily"], clock=lambda: T0)
    ledger = SuccessLedger(metrics, clock=lambda: T0)
    ledger.sync([], policies=["daily"])
    metrics.backup_finished("daily", ok=True, duration_s=1, finished_at=T0)
    ledger.sync([], policies=["daily"])  # listed before the archive was published
    assert last(registry, "daily") == T0.timestamp()
    ledger.sync([archive("daily_1", "daily", T0)], policies=["daily"])
    assert last(registry, "daily") == T0.timestamp()  # the finish time, not moved back
    ledger.sync([], policies=["daily"])  # deleted by hand
    assert last(registry, "daily") == 0
    assert ledger.newest() == {}
    assert "daily" not in ledger.grace_from()  # it had a restore point: no grace any more


def test_the_newest_archive_deleted_falls_back_to_the_one_left() -> None:
    """Deleting the newest archive moves the last success back to the newest one left; a
    policy added later is seeded from disk and gets its grace from then."""
    registry = CollectorRegistry()
    metrics = Metrics(registry, version="t", policies=["daily"], clock=lambda: T0)
    ledger = SuccessLedger(metrics, clock=lambda: T0)
    old, new = T0 - timedelta(days=1), T0
    both = [archive("daily_2", "daily", new), archive("daily_1", "daily", old)]
    ledger.sync(both, policies=["daily"])
    assert last(registry, "daily") == new.timestamp()
    ledger.sync(both[1:], policies=["daily"])
    assert last(registry, "daily") == old.timestamp()
    added = [*both[1:], archive("later_1", "later", old)]
    ledger.sync(added, policies=["daily", "later"])
    assert last(registry, "later") == old.timestamp()
    ledger.forget(["later"])
    assert set(ledger.newest()) == {"daily"}


def test_a_new_newest_dated_earlier_is_not_a_loss() -> None:
    """An archive listed as newest but dated before the previous newest (written after the wall
    clock was stepped back), with the previous one still on disk, is no loss: nothing is
    logged as lost and the last success does not move back."""
    registry = CollectorRegistry()
    metrics = Metrics(registry, version="t", policies=["daily"], clock=lambda: T0)
    ledger = SuccessLedger(metrics, clock=lambda: T0)
    first = archive("daily_1", "daily", T0)
    ledger.sync([first], policies=["daily"])
    stepped = archive("daily_2", "daily", T0 - timedelta(hours=1))
    ledger.sync([stepped, first], policies=["daily"])
    assert last(registry, "daily") == T0.timestamp()
    assert ledger.newest() == {"daily": stepped.created_at}


def test_a_new_archive_dated_before_the_newest_is_a_new_success() -> None:
    """After the wall clock stepped back, a new archive (higher sequence) is dated before the
    newest one: it is the newest, `silent_for` restarts from it on the monotonic clock, and
    a policy with no new archive is silent for as long as the monotonic clock ran, whatever
    the archives' dates (before, it was taken as "the newest went" and nothing measured the
    silence)."""
    registry = CollectorRegistry()
    metrics = Metrics(registry, version="t", policies=["often"], clock=lambda: T0)
    mono = [100.0]
    ledger = SuccessLedger(metrics, clock=lambda: T0, monotonic=lambda: mono[0])
    future = archive("often_1", "often", T0 + timedelta(days=1))
    ledger.sync([dataclasses.replace(future, sequence=1)], policies=["often"])
    mono[0] = 160.0
    assert ledger.silent_for() == {"often": 60.0}
    stepped = dataclasses.replace(archive("often_2", "often", T0), sequence=2)
    ledger.sync([stepped, dataclasses.replace(future, sequence=1)], policies=["often"])
    assert ledger.silent_for() == {"often": 0.0}
    assert ledger.newest() == {"often": T0}
