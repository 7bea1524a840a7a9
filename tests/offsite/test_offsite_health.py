"""Whether offsite copies lag (service/offsite_health.py), in process on file:// stores: the
/healthz reason and backup_sidecar_offsite_lagging appear only after max_age, clear as soon as
a copy lands, ignore a stepped wall clock, and follow reloads; the uploader on SIGHUP closes
the old store, releases its lease and rebuilds its series from the new bucket."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from backup_sidecar import archiver, jobs
from backup_sidecar.offsite import Lease, Store, parse_target
from backup_sidecar.service.health import HealthState
from backup_sidecar.service.live import Configured, LiveConfig
from backup_sidecar.service.metric_families import MetricFamilies
from backup_sidecar.service.offsite import OffsiteUploader
from backup_sidecar.service.offsite_health import OffsiteLag
from backup_sidecar.settings import load_settings, resolve_paths
from support.databases import make_db

LAGGING = "backup_sidecar_offsite_lagging"
LAST = "backup_sidecar_offsite_last_success_timestamp_seconds"


def configured(tmp_path: Path, **offsite: Any) -> Configured:
    """A configuration with policies `daily` and `pre_restore`, and ``offsite`` (none if empty)."""
    user = tmp_path / "data" / "user_data.db"
    if not user.exists():
        make_db(user, wal=True, rows=20)
    (tmp_path / "backups").mkdir(exist_ok=True)
    doc: dict[str, Any] = {
        "backup_dir": str(tmp_path / "backups"),
        "databases": {"user": {"path": str(user)}},
        "policies": {"pre_restore": {"keep": 10}, "daily": {"every": "1h", "keep": 5}},
    }
    if offsite:
        doc["offsite"] = offsite
    path = tmp_path / "sidecar.yaml"
    path.write_text(yaml.safe_dump(doc))
    settings = load_settings(path, environ={})
    return Configured.of(settings, resolve_paths(settings, environ={}, cwd=tmp_path))


class Clocks:
    """An injected monotonic clock and wall clock, moved by the test."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = datetime(2026, 12, 7, 12, tzinfo=UTC).timestamp()

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


def lag_for(live: LiveConfig, clocks: Clocks) -> tuple[OffsiteLag, HealthState, CollectorRegistry]:
    registry = CollectorRegistry()
    health = HealthState()
    families = MetricFamilies(registry, version="test", clock=lambda: datetime.now(UTC))
    lag = OffsiteLag(
        live=live,
        health=health,
        families=families,
        monotonic=lambda: clocks.mono,
        clock=lambda: clocks.wall,
    )
    return lag, health, registry


def test_a_policy_lags_only_after_max_age_pending_and_clears_when_a_copy_lands(
    tmp_path: Path,
) -> None:
    """Never confirmed offsite: no reason for max_age after the first pending archive (a
    fresh daemon gets its grace), then /healthz 503's reason and the gauge at 1; the upload
    that lands clears both at once. A copy confirmed long ago with a new archive just made
    (a rarely run policy) is not lagging until that archive waited max_age."""
    live = LiveConfig(configured(tmp_path, url=f"file://{tmp_path / 'off'}", max_age="1h"))
    clocks = Clocks()
    lag, health, registry = lag_for(live, clocks)
    lag.observed({"daily": 1}, {})
    lag.check()
    assert health.current().reasons() == []
    assert registry.get_sample_value(LAGGING, {"policy": "daily"}) == 0
    assert registry.get_sample_value(LAGGING, {"policy": "manual"}) == 0
    clocks.advance(3601)
    lag.observed({"daily": 2}, {})
    lag.check()
    (reason,) = health.current().reasons()
    assert "policy 'daily': no archive confirmed offsite for 1:00:01" in reason
    assert "2 archive(s) pending upload" in reason
    assert registry.get_sample_value(LAGGING, {"policy": "daily"}) == 1
    lag.uploaded("daily", 1)  # one landed: the newest copy is fresh, one older still pending
    lag.check()
    assert health.current().reasons() == []
    assert registry.get_sample_value(LAGGING, {"policy": "daily"}) == 0

    week_ago = clocks.wall - 7 * 86400
    lag.observed({"daily": 0}, {"daily": week_ago})
    lag.observed({"daily": 1}, {"daily": week_ago})  # a new archive: a week after the last
    lag.check()
    assert health.current().ok
    clocks.advance(3601)
    lag.observed({"daily": 1}, {"daily": week_ago})
    lag.check()
    (reason,) = health.current().reasons()
    confirmed = datetime.fromtimestamp(week_ago, UTC).isoformat()
    assert f"the newest offsite copy (confirmed {confirmed}) is 7 days, 1:00:01 old" in reason


def test_the_verdict_ignores_a_stepped_wall_clock(tmp_path: Path) -> None:
    """The newest copy's age runs on the monotonic clock from when it was learned: a wall
    clock stepped a day forward fakes no lag, and one stepped back hides none."""
    live = LiveConfig(configured(tmp_path, url=f"file://{tmp_path / 'off'}", max_age="1h"))
    clocks = Clocks()
    lag, health, registry = lag_for(live, clocks)
    lag.observed({"daily": 2}, {})
    clocks.advance(3000)
    landed = clocks.wall - 10  # one of the two landed 10 s ago (the store's time)
    lag.observed({"daily": 1}, {"daily": landed})
    clocks.wall += 86400  # stepped a day forward
    clocks.advance(1000)  # pending for 4000 s, the newest copy 1010 s old
    lag.observed({"daily": 1}, {"daily": landed})
    lag.check()
    assert health.current().ok
    assert registry.get_sample_value(LAGGING, {"policy": "daily"}) == 0
    clocks.wall -= 2 * 86400  # stepped back: the copy now looks a day in the future
    clocks.advance(2700)  # the newest copy 3710 s old
    lag.observed({"daily": 1}, {"daily": landed})
    lag.check()
    assert registry.get_sample_value(LAGGING, {"policy": "daily"}) == 1
    assert "is 1:01:50 old" in health.current().reasons()[0]


def test_no_series_and_no_reason_without_max_age_and_a_removed_policy_loses_both(
    tmp_path: Path,
) -> None:
    """Without offsite.max_age nothing is watched (no gauge series, no reason); a reload that
    removes a lagging policy drops its reason and its series at the next check; read-only is
    a note and a gauge, never a reason."""
    url = f"file://{tmp_path / 'off'}"
    live = LiveConfig(configured(tmp_path, url=url))
    clocks = Clocks()
    lag, health, registry = lag_for(live, clocks)
    lag.observed({"daily": 1}, {})
    clocks.advance(86400 * 30)
    lag.read_only("host pid 1 (lease id x) holds the prefix")
    lag.check()
    assert health.current().ok
    assert health.current().notes() == [
        "offsite is read-only: host pid 1 (lease id x) holds the prefix"
    ]
    assert registry.get_sample_value("backup_sidecar_offsite_read_only") == 1
    assert registry.get_sample_value(LAGGING, {"policy": "daily"}) is None

    live.now = configured(tmp_path, url=url, max_age="1h")
    lag.read_only(None)
    lag.check()
    assert registry.get_sample_value(LAGGING, {"policy": "daily"}) == 1
    assert registry.get_sample_value("backup_sidecar_offsite_read_only") == 0
    assert health.current().notes() == []
    doc = yaml.safe_load((tmp_path / "sidecar.yaml").read_text())
    del doc["policies"]["daily"]
    (tmp_path / "sidecar.yaml").write_text(yaml.safe_dump(doc))
    settings = load_settings(tmp_path / "sidecar.yaml", environ={})
    live.now = Configured.of(settings, resolve_paths(settings, environ={}, cwd=tmp_path))
    lag.check()
    assert health.current().ok
    assert registry.get_sample_value(LAGGING, {"policy": "daily"}) is None


def test_a_reload_to_another_store_releases_the_old_lease_and_rebuilds_the_series(
    tmp_path: Path,
) -> None:
    """The uploader on store A uploads and holds A's lease; a reload to store B releases A's
    lease (another sidecar takes it at once, not after the TTL) and the last-success series
    is B's (absent: nothing confirmed there yet, then B's upload); removing the section
    drops every series and zeroes pending."""
    url_a, url_b = f"file://{tmp_path / 'a'}", f"file://{tmp_path / 'b'}"
    live = LiveConfig(configured(tmp_path, url=url_a, lease_ttl="1h"))
    rt = live.now.runtime
    jobs.run_backup(rt, policy="daily", names=None, archive_name="first")
    registry = CollectorRegistry()
    uploader = OffsiteUploader(
        live=live,
        families=MetricFamilies(registry, version="test", clock=lambda: datetime.now(UTC)),
        catalog=archiver.Catalog(rt.backup_dir),
        environ={},
    )
    assert uploader.sync() == 1
    on_a = registry.get_sample_value(LAST, {"policy": "daily"})
    assert on_a is not None
    other = Lease(Store(parse_target(url_a)), ttl=60)
    assert not other.acquire().writable  # held by the uploader

    assert registry.get_sample_value("backup_sidecar_offsite_pending_archives") == 0

    live.now = configured(tmp_path, url=url_b, lease_ttl="1h")
    uploader.reloaded()
    assert uploader.sync() == 1  # B holds nothing: the archive is uploaded there too
    assert other.acquire().writable  # A's lease was released by the reload, not run out
    other.release()
    on_b = registry.get_sample_value(LAST, {"policy": "daily"})
    assert on_b is not None and on_b >= on_a
    assert Store(parse_target(url_b)).confirm("first.tar.gz").confirmed

    live.now = configured(tmp_path)  # the offsite section removed
    uploader.reloaded()
    assert uploader.sync() == 0
    assert registry.get_sample_value(LAST, {"policy": "daily"}) is None
    assert registry.get_sample_value("backup_sidecar_offsite_pending_archives") == 0
    assert Lease(Store(parse_target(url_b)), ttl=60).acquire().writable  # B's released too
