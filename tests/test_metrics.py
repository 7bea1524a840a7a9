"""The metrics class: names, labels, pre-initialised series and what each job report changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from backup_sidecar.control.requests import OPS
from backup_sidecar.service.metric_families import DURATION_BUCKETS
from backup_sidecar.service.metrics import Metrics

T0 = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)


class Clock:
    """An injected clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry, clock: Clock) -> Metrics:
    return Metrics(
        registry, version="1.2.3", policies=["daily", "weekly"], databases=["arrow"], clock=clock
    )


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(f"backup_sidecar_{name}", labels)


def exposed_names(registry: CollectorRegistry) -> set[str]:
    text = generate_latest(registry).decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_series_exist_before_any_event(metrics: Metrics, registry: CollectorRegistry) -> None:
    """Known policies have their counters, histograms, archive counts and last-success times at 0
    from the first scrape, so rate() and absent() alerts work before the first backup."""
    for policy in ("daily", "weekly"):
        for result in ("ok", "error"):
            assert value(registry, "backup_runs_total", policy=policy, result=result) == 0
        assert value(registry, "backup_duration_seconds_count", policy=policy) == 0
        assert value(registry, "prune_deleted_total", policy=policy) == 0
        assert value(registry, "prune_errors_total", policy=policy) == 0
        assert value(registry, "archives", policy=policy) == 0
        assert value(registry, "backup_last_success_timestamp_seconds", policy=policy) == 0
    for result in ("ok", "error"):
        assert value(registry, "restore_runs_total", result=result) == 0
        assert value(registry, "restore_drill_runs_total", result=result) == 0
        assert value(registry, "control_requests_total", op="restore", result=result) == 0
    assert value(registry, "restore_last_success_timestamp_seconds") == 0
    names = exposed_names(registry)
    assert "backup_sidecar_build_info" in names
    assert "backup_sidecar_database_healthy" not in names, "no made-up health before a check"


def test_build_info_is_one_with_the_version(registry: CollectorRegistry, metrics: Metrics) -> None:
    """build_info carries the version as a label and the value 1."""
    text = generate_latest(registry).decode()
    (family,) = (f for f in text_string_to_metric_families(text) if f.name.endswith("build_info"))
    (sample,) = family.samples
    assert sample.value == 1
    assert sample.labels["version"] == "1.2.3"


def test_naming_conventions(registry: CollectorRegistry, metrics: Metrics) -> None:
    """Every metric has the prefix, only counters end in _total, none uses the reserved
    histogram suffixes, and the duration histogram spans 0.1 s to an hour."""
    text = generate_latest(registry).decode()
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("backup_sidecar_")
        if family.type != "counter":
            assert not family.name.endswith("_total"), family.name
        if family.type not in ("histogram", "summary"):
            assert not family.name.endswith(("_count", "_sum", "_bucket")), family.name
    assert DURATION_BUCKETS[0] == 0.1
    assert DURATION_BUCKETS[-1] == 3600


def test_successful_backup(metrics: Metrics, registry: CollectorRegistry, clock: Clock) -> None:
    """A success counts one ok run, observes its duration, and sets last success, size, age
    and each database's snapshot lock time."""
    metrics.backup_finished(
        "daily",
        ok=True,
        duration_s=2.0,
        size_bytes=4096,
        finished_at=T0,
        snapshot_seconds={"user": 1.25},
    )
    assert value(registry, "backup_snapshot_lock_seconds", database="user") == 1.25
    assert value(registry, "backup_runs_total", policy="daily", result="ok") == 1
    assert value(registry, "backup_runs_total", policy="daily", result="error") == 0
    assert value(registry, "backup_duration_seconds_count", policy="daily") == 1
    assert value(registry, "backup_duration_seconds_bucket", policy="daily", le="2.5") == 1
    assert value(registry, "backup_duration_seconds_bucket", policy="daily", le="1.0") == 0
    assert value(registry, "backup_last_success_timestamp_seconds", policy="daily") == (
        T0.timestamp()
    )
    assert value(registry, "backup_last_size_bytes", policy="daily") == 4096
    clock.now = T0 + timedelta(hours=3)
    assert value(registry, "policy_last_success_age_seconds", policy="daily") == 3 * 3600


def test_failed_backup_keeps_last_success(metrics: Metrics, registry: CollectorRegistry) -> None:
    """A failure counts an error run and leaves the last success time and size alone."""
    metrics.backup_finished("daily", ok=True, duration_s=1, size_bytes=10, finished_at=T0)
    later = T0 + timedelta(days=1)
    metrics.backup_finished("daily", ok=False, duration_s=5, size_bytes=99, finished_at=later)
    assert value(registry, "backup_runs_total", policy="daily", result="error") == 1
    assert value(registry, "backup_duration_seconds_count", policy="daily") == 2
    assert value(registry, "backup_last_success_timestamp_seconds", policy="daily") == (
        T0.timestamp()
    )
    assert value(registry, "backup_last_size_bytes", policy="daily") == 10


def test_age_is_absent_until_a_success(metrics: Metrics, registry: CollectorRegistry) -> None:
    """The last-success age is only exported for a policy that has succeeded (or was seeded)."""
    assert value(registry, "policy_last_success_age_seconds", policy="daily") is None
    metrics.last_success_known("weekly", T0 - timedelta(days=2))
    assert value(registry, "policy_last_success_age_seconds", policy="weekly") == 2 * 86400
    assert value(registry, "backup_runs_total", policy="weekly", result="ok") == 0


def test_naive_datetimes_are_refused(metrics: Metrics) -> None:
    """A timestamp without a time zone is a bug in the caller, not a value to guess at."""
    with pytest.raises(ValueError, match="no time zone"):
        metrics.backup_finished("daily", ok=True, duration_s=1, finished_at=datetime(2026, 1, 1))


def test_prune_and_archive_counts(metrics: Metrics, registry: CollectorRegistry) -> None:
    """Prunes add deleted and failed archives; a count sets every known policy, absent ones to 0."""
    metrics.prune_finished("daily", 3)
    metrics.prune_finished("daily", 1, errors=2)
    assert value(registry, "prune_deleted_total", policy="daily") == 4
    assert value(registry, "prune_errors_total", policy="daily") == 2
    metrics.archives_counted({"daily": 7, "weekly": 2, "pre_restore": 1})
    metrics.archives_counted({"daily": 6})
    assert value(registry, "archives", policy="daily") == 6
    assert value(registry, "archives", policy="weekly") == 0
    assert value(registry, "archives", policy="pre_restore") == 0


def test_restore_and_drill(metrics: Metrics, registry: CollectorRegistry) -> None:
    """Restores and drills count by result; only successes move their timestamps."""
    metrics.restore_finished(ok=True, finished_at=T0)
    metrics.restore_finished(ok=False, finished_at=T0 + timedelta(hours=1))
    metrics.drill_finished(ok=False, finished_at=T0)
    assert value(registry, "restore_runs_total", result="ok") == 1
    assert value(registry, "restore_runs_total", result="error") == 1
    assert value(registry, "restore_last_success_timestamp_seconds") == T0.timestamp()
    assert value(registry, "restore_drill_runs_total", result="error") == 1
    assert value(registry, "restore_drill_last_success_timestamp_seconds") == 0
    metrics.drill_finished(ok=True, finished_at=T0)
    assert value(registry, "restore_drill_last_success_timestamp_seconds") == T0.timestamp()


def test_database_observed(metrics: Metrics, registry: CollectorRegistry) -> None:
    """A check sets health and readings; an unknown reading (file gone) removes its series."""
    metrics.database_observed(
        "arrow", healthy=True, size_bytes=8192, wal_size_bytes=0, page_count=2, freelist_count=0
    )
    assert value(registry, "database_healthy", database="arrow") == 1
    assert value(registry, "database_size_bytes", database="arrow") == 8192
    assert value(registry, "database_wal_size_bytes", database="arrow") == 0
    assert value(registry, "database_pages", database="arrow") == 2
    assert value(registry, "database_freelist_pages", database="arrow") == 0
    metrics.database_observed("arrow", healthy=False)
    assert value(registry, "database_healthy", database="arrow") == 0
    assert value(registry, "database_size_bytes", database="arrow") is None
    assert value(registry, "database_pages", database="arrow") is None


def test_next_runs_replace_the_schedule(metrics: Metrics, registry: CollectorRegistry) -> None:
    """Next run times are replaced as a whole: a paused or removed policy loses its series."""
    metrics.next_runs({"daily": T0, "weekly": T0 + timedelta(days=3)})
    name = "scheduler_next_run_timestamp_seconds"
    assert value(registry, name, policy="daily") == T0.timestamp()
    metrics.next_runs({"daily": None, "hourly": T0})
    assert value(registry, name, policy="daily") is None
    assert value(registry, name, policy="weekly") is None
    assert value(registry, name, policy="hourly") == T0.timestamp()


def test_objectives_replace_the_recovery_point_objectives(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    """`health.max_backup_age` as seconds per policy, replaced as a whole on reload."""
    name = "backup_max_age_seconds"
    assert value(registry, name, policy="daily") is None
    metrics.objectives({"daily": timedelta(hours=26), "weekly": timedelta(days=8)})
    assert value(registry, name, policy="daily") == 26 * 3600
    assert value(registry, name, policy="weekly") == 8 * 86400
    metrics.objectives({"hourly": timedelta(hours=2)})
    assert value(registry, name, policy="daily") is None
    assert value(registry, name, policy="weekly") is None
    assert value(registry, name, policy="hourly") == 7200


def test_overdue_check_is_exported_and_forgotten(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    """The sidecar's own overdue verdict (which also runs on its monotonic clock) is 1 or 0 per
    policy with a max_backup_age, so the overdue alert sees what an archive dated in the future
    hides from `time() - last_success`; a policy dropped from the check or by a reload loses
    its series."""
    name = "policy_overdue"
    metrics.overdue_checked(["daily", "hourly"], ["hourly"])
    assert value(registry, name, policy="daily") == 0
    assert value(registry, name, policy="hourly") == 1
    metrics.overdue_checked(["hourly"], [])
    assert value(registry, name, policy="daily") is None
    assert value(registry, name, policy="hourly") == 0
    metrics.forget(policies=["hourly"])
    assert value(registry, name, policy="hourly") is None


def test_control_requests_bound_their_labels(metrics: Metrics, registry: CollectorRegistry) -> None:
    """Control requests count by op and result; an op outside the protocol counts as unknown,
    so a misbehaving client cannot create unbounded series."""
    metrics.control_request("restore", ok=True)
    metrics.control_request("drop tables", ok=False)
    assert value(registry, "control_requests_total", op="restore", result="ok") == 1
    assert value(registry, "control_requests_total", op="unknown", result="error") == 1
    assert value(registry, "control_requests_total", op="drop tables", result="error") is None


def test_every_socket_op_is_counted_under_its_own_name(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    """Each op the socket serves (offsite_status and export included) counts under its own
    label, never as "unknown": the op list is the protocol's own."""
    for op in OPS:
        metrics.control_request(op, ok=True)
        assert value(registry, "control_requests_total", op=op, result="ok") == 1, op
    assert value(registry, "control_requests_total", op="unknown", result="ok") == 0


def test_backup_dir_free(metrics: Metrics, registry: CollectorRegistry) -> None:
    """The backup directory's free space is exported in bytes."""
    metrics.backup_dir_free(123_456_789)
    assert value(registry, "backup_dir_free_bytes") == 123_456_789


def test_registry_is_injected_never_global(clock: Clock) -> None:
    """Two instances live in their own registries and neither touches the global REGISTRY."""
    first, second = CollectorRegistry(), CollectorRegistry()
    Metrics(first, version="1", policies=["daily"], clock=clock)
    Metrics(second, version="1", policies=["daily"], clock=clock, process_metrics=True)
    assert REGISTRY.get_sample_value("backup_sidecar_backup_runs_total", {}) is None
    assert not any(n.startswith("backup_sidecar_") for n in exposed_names(REGISTRY))
    assert "process_open_fds" in exposed_names(second)
    assert "process_open_fds" not in exposed_names(first)


def test_standard_process_names_and_no_created_series(clock: Clock) -> None:
    """The process metrics carry the standard `process_*` names stock dashboards query (they
    were `backup_sidecar_process_*`), and no counter or histogram exports a `_created` series."""
    registry = CollectorRegistry()
    Metrics(registry, version="1", policies=["daily"], clock=clock, process_metrics=True)
    names = exposed_names(registry)
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= names
    assert not any(n.startswith("backup_sidecar_process_") for n in names)
    assert "backup_sidecar_backup_runs_total" in names
    assert [n for n in names if n.endswith("_created")] == []
