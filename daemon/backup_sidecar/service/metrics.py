"""Every Prometheus metric the sidecar exports, owned by one class over an injected registry.

The jobs report outcomes through small methods (`backup_finished`, `prune_finished`, ...);
nothing else creates metrics. Names carry the `backup_sidecar_` prefix and a base unit, only
counters end in `_total`, and no label ever carries an archive name (unbounded cardinality).
"""

from __future__ import annotations

import platform
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

PREFIX = "backup_sidecar_"

#: Backups take from a tenth of a second (a small database) to an hour (a large one, slow disk).
DURATION_BUCKETS = (
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1200.0,
    1800.0,
    3600.0,
)

#: The control socket's operations; any other op is counted as "unknown" to bound the labels.
CONTROL_OPS = ("ping", "status", "list", "backup", "verify", "restore", "prune", "scrub")
#: Outcomes of backups, restores, drills and control requests. `busy` is a refusal because
#: another operation held the database (nothing was attempted): not a failure, so the
#: failing-backups alert does not count it.
RESULTS = ("ok", "error", "busy")
#: Why the scheduler dropped a run (backup_sidecar.service.scheduler.SKIP_REASONS).
SKIP_REASONS = ("late", "still_running")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _timestamp(moment: datetime) -> float:
    """Seconds since the epoch; a naive datetime is refused (its meaning depends on the host)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"timestamp {moment.isoformat()} has no time zone")
    return moment.timestamp()


def _replace_series(gauge: Gauge, labels: set[str], values: Mapping[str, float]) -> set[str]:
    """Set ``gauge`` to ``values`` (by its one label), removing the series of ``labels`` (the
    ones set last time) that are not among them; returns the labels now set."""
    for label in labels - set(values):
        gauge.remove(label)
    for label, value in values.items():
        gauge.labels(label).set(value)
    return set(values)


def _result(ok: bool, *, busy: bool = False) -> str:
    if busy:
        return "busy"
    return "ok" if ok else "error"


class _PolicyAgeCollector:
    """`policy_last_success_age_seconds`, computed at scrape time from the injected clock."""

    name = PREFIX + "policy_last_success_age_seconds"
    help = "Seconds since the policy's last successful backup (absent until its first success)."

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}

    def reset(self, policy: str, at: float | None) -> None:
        """Set exactly (the newest archive went); None removes the series."""
        with self._lock:
            if at is None:
                self._last.pop(policy, None)
            else:
                self._last[policy] = at

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self.name, self.help, labels=["policy"])]

    def collect(self) -> Iterator[Metric]:
        now = _timestamp(self._clock())
        family = GaugeMetricFamily(self.name, self.help, labels=["policy"])
        with self._lock:
            last = sorted(self._last.items())
        for policy, at in last:
            family.add_metric([policy], max(0.0, now - at))
        yield family


class Metrics:
    """The sidecar's metrics in `registry` (never the process-global one), and their updates."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        version: str,
        policies: Iterable[str] = (),
        databases: Iterable[str] = (),
        clock: Callable[[], datetime] = _utcnow,
        process_metrics: bool = False,
    ) -> None:
        self.registry = registry
        self._next_run_policies: set[str] = set()
        self._objective_policies: set[str] = set()
        self._overdue_policies: set[str] = set()
        self._policies: set[str] = set()
        self._last_success: dict[str, float] = {}
        self._lock = threading.Lock()

        def counter(name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
            return Counter(PREFIX + name, doc, list(labels), registry=registry)

        def gauge(name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
            return Gauge(PREFIX + name, doc, list(labels), registry=registry)

        self.build_info = gauge(
            "build_info",
            "Always 1; labels name the running versions.",
            ["version", "python_version", "sqlite_version"],
        )
        self.build_info.labels(version, platform.python_version(), sqlite3.sqlite_version).set(1)

        self.backup_runs = counter(
            "backup_runs_total", "Backups attempted, by policy and result.", ["policy", "result"]
        )
        self.backup_duration = Histogram(
            PREFIX + "backup_duration_seconds",
            "Wall time of backups (snapshot, check, pack), successful or not.",
            ["policy"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.backup_last_success = gauge(
            "backup_last_success_timestamp_seconds",
            "Unix time the policy's last backup succeeded; 0 if it never has.",
            ["policy"],
        )
        self.backup_last_size = gauge(
            "backup_last_size_bytes", "Size of the policy's newest archive.", ["policy"]
        )
        self.snapshot_lock = gauge(
            "backup_snapshot_lock_seconds",
            "How long the last successful backup's one-step snapshot read-locked the live "
            "database: a rollback-journal application's writers wait up to this long.",
            ["database"],
        )
        self.backup_max_age = gauge(
            "backup_max_age_seconds",
            "The policy's recovery point objective (health.max_backup_age): the oldest its newest "
            "successful backup may be. Absent for a policy without one.",
            ["policy"],
        )
        self.policy_overdue = gauge(
            "policy_overdue",
            "1 while the sidecar's own overdue check (the /healthz reason) holds the policy past "
            "its max_backup_age, also by its monotonic clock (an archive dated in the future or "
            "a stepped wall clock cannot hide it); 0 otherwise. Absent without a max_backup_age.",
            ["policy"],
        )
        self.archives = gauge("archives", "Archives in the backup directory.", ["policy"])
        self.prune_deleted = counter(
            "prune_deleted_total", "Archives deleted by retention.", ["policy"]
        )
        self.prune_errors = counter(
            "prune_errors_total",
            "Archives retention failed to delete, or failed prunes.",
            ["policy"],
        )
        self.restore_runs = counter("restore_runs_total", "Restores attempted.", ["result"])
        self.restore_last_success = gauge(
            "restore_last_success_timestamp_seconds",
            "Unix time of the last successful restore; 0 if none yet.",
        )
        self.drill_runs = counter(
            "restore_drill_runs_total", "Restore drills (verify + scratch restore).", ["result"]
        )
        self.drill_last_success = gauge(
            "restore_drill_last_success_timestamp_seconds",
            "Unix time of the last successful restore drill; 0 if none yet.",
        )
        self.scrub_runs = counter(
            "scrub_runs_total",
            "Scrubs (every archive read to its end); error: the scrub itself could not run.",
            ["result"],
        )
        self.scrub_last_success = gauge(
            "scrub_last_success_timestamp_seconds",
            "Unix time the last scrub completed; 0 if none yet.",
        )
        self.archives_damaged = gauge(
            "archives_damaged",
            "Archives listed damaged (unreadable metadata, or marked by a failed read check, "
            "scrub or restore drill).",
            ["policy"],
        )
        self.database_healthy = gauge(
            "database_healthy",
            "1 if the last check of the live database passed, else 0.",
            ["database"],
        )
        self.database_size = gauge(
            "database_size_bytes", "Size of the live database's main file.", ["database"]
        )
        self.database_wal_size = gauge(
            "database_wal_size_bytes", "Size of the live database's -wal file.", ["database"]
        )
        # Not `_page_count`: promtool reserves the `_count` suffix for histograms and summaries.
        self.database_pages = gauge(
            "database_pages", "Pages in the live database (PRAGMA page_count).", ["database"]
        )
        self.database_freelist_pages = gauge(
            "database_freelist_pages",
            "Unused pages in the live database (PRAGMA freelist_count).",
            ["database"],
        )
        self.backup_dir_free_bytes = gauge(
            "backup_dir_free_bytes", "Bytes still writable in the backup directory's filesystem."
        )
        self.next_run = gauge(
            "scheduler_next_run_timestamp_seconds",
            "Unix time of the policy's next scheduled backup (absent when none is scheduled).",
            ["policy"],
        )
        self.missed_runs = counter(
            "scheduler_missed_runs_total",
            "Scheduled runs the scheduler dropped: `late` (a worker freed up more than one "
            "period after the run time) or `still_running` (the policy's previous run was).",
            ["policy", "reason"],
        )
        self.control_requests = counter(
            "control_requests_total", "Control socket requests, by op and result.", ["op", "result"]
        )
        self._ages = _PolicyAgeCollector(clock)
        registry.register(self._ages)
        if process_metrics:
            ProcessCollector(namespace=PREFIX.rstrip("_"), registry=registry)

        for op in (*CONTROL_OPS, "unknown"):
            for result in RESULTS:
                self.control_requests.labels(op, result)
        for result in RESULTS:
            self.restore_runs.labels(result)
            self.drill_runs.labels(result)
            self.scrub_runs.labels(result)
        self.declare(policies=policies, databases=databases)

    def declare(self, *, policies: Iterable[str] = (), databases: Iterable[str] = ()) -> None:
        """Create the series of known policies and databases so they exist before any event.

        Counters, histograms and archive counts start at 0, and last-success timestamps at 0
        meaning "never" (as the unlabelled restore timestamps must). Database readings stay
        absent until the first check: a made-up 0 or 1 there would be a false alarm or a lie.
        """
        policies = set(policies)
        with self._lock:
            self._policies |= policies
        for policy in policies:
            for result in RESULTS:
                self.backup_runs.labels(policy, result)
            self.backup_duration.labels(policy)
            self.prune_deleted.labels(policy)
            self.prune_errors.labels(policy)
            self.archives.labels(policy)
            self.archives_damaged.labels(policy)
            self.backup_last_success.labels(policy)
            for reason in SKIP_REASONS:
                self.missed_runs.labels(policy, reason)
        del databases  # no database series has a meaningful value before the first check

    def last_success_known(self, policy: str, finished_at: datetime) -> None:
        """A policy's last success seen on disk or just made (no run is counted); it only ever
        moves forward here (a rescan finds the archive's start, the run recorded its end)."""
        at = _timestamp(finished_at)
        with self._lock:
            self._set_last_success(policy, max(at, self._last_success.get(policy, at)))

    def _set_last_success(self, policy: str, at: float) -> None:
        self._last_success[policy] = at
        self.backup_last_success.labels(policy).set(at)
        self._ages.reset(policy, at)

    def has_last_success(self, policy: str) -> bool:
        with self._lock:
            return policy in self._last_success

    def last_success_reset(self, policy: str, finished_at: datetime | None) -> None:
        """The policy's newest archive is gone: its last success is the newest one left, or
        0 ("never") with no age series when none is left."""
        with self._lock:
            if finished_at is not None:
                self._set_last_success(policy, _timestamp(finished_at))
                return
            self._last_success.pop(policy, None)
            self.backup_last_success.labels(policy).set(0)
            self._ages.reset(policy, None)

    def forget(self, *, policies: Iterable[str] = (), databases: Iterable[str] = ()) -> None:
        """Remove every series of policies and databases a reload removed: a removed failing
        one must not keep an alert firing (or a stale reading shown) until a restart."""
        policies, databases = set(policies), set(databases)
        with self._lock:
            self._policies -= policies
            self._next_run_policies -= policies
            self._objective_policies -= policies
            self._overdue_policies -= policies
            for policy in policies:
                for result in RESULTS:
                    self.backup_runs.remove(policy, result)
                for reason in SKIP_REASONS:
                    self.missed_runs.remove(policy, reason)
                for metric in (
                    self.backup_duration,
                    self.backup_last_success,
                    self.backup_last_size,
                    self.backup_max_age,
                    self.policy_overdue,
                    self.archives,
                    self.archives_damaged,
                    self.prune_deleted,
                    self.prune_errors,
                    self.next_run,
                ):
                    metric.remove(policy)
                self._ages.reset(policy, None)
                self._last_success.pop(policy, None)
            for database in databases:
                for metric in (
                    self.snapshot_lock,
                    self.database_healthy,
                    self.database_size,
                    self.database_wal_size,
                    self.database_pages,
                    self.database_freelist_pages,
                ):
                    metric.remove(database)

    def backup_finished(
        self,
        policy: str,
        *,
        ok: bool,
        duration_s: float,
        finished_at: datetime,
        size_bytes: int | None = None,
        snapshot_seconds: Mapping[str, float] | None = None,
        busy: bool = False,
    ) -> None:
        """Count a backup; a success also moves the last-success time, the newest size and
        each database's snapshot lock time. A `busy` refusal is counted as such, not timed."""
        self.backup_runs.labels(policy, _result(ok, busy=busy)).inc()
        if busy:
            return
        self.backup_duration.labels(policy).observe(duration_s)
        if ok:
            with self._lock:  # exactly: after a step back of the wall clock, too
                self._set_last_success(policy, _timestamp(finished_at))
            if size_bytes is not None:
                self.backup_last_size.labels(policy).set(size_bytes)
            for database, seconds in (snapshot_seconds or {}).items():
                self.snapshot_lock.labels(database).set(seconds)

    def prune_finished(self, policy: str, deleted: int, *, errors: int = 0) -> None:
        """Count the archives a prune deleted and the ones (or the whole prune) that failed."""
        self.prune_deleted.labels(policy).inc(deleted)
        self.prune_errors.labels(policy).inc(errors)

    def archives_counted(self, counts: Mapping[str, int]) -> None:
        """Set the archive count of each policy; a known policy missing from `counts` has 0."""
        with self._lock:
            self._policies |= set(counts)
            for policy in self._policies:
                self.archives.labels(policy).set(counts.get(policy, 0))

    def damaged_counted(self, counts: Mapping[str, int]) -> None:
        """Set the damaged-archive count of each policy; a known policy missing has 0."""
        with self._lock:
            self._policies |= set(counts)
            for policy in self._policies:
                self.archives_damaged.labels(policy).set(counts.get(policy, 0))

    def scrub_finished(self, *, ok: bool, finished_at: datetime) -> None:
        self.scrub_runs.labels(_result(ok)).inc()
        if ok:
            self.scrub_last_success.set(_timestamp(finished_at))

    def restore_finished(self, *, ok: bool, finished_at: datetime, busy: bool = False) -> None:
        self.restore_runs.labels(_result(ok, busy=busy)).inc()
        if ok:
            self.restore_last_success.set(_timestamp(finished_at))

    def drill_finished(self, *, ok: bool, finished_at: datetime) -> None:
        self.drill_runs.labels(_result(ok)).inc()
        if ok:
            self.drill_last_success.set(_timestamp(finished_at))

    def database_observed(
        self,
        database: str,
        *,
        healthy: bool | None,
        size_bytes: int | None = None,
        wal_size_bytes: int | None = None,
        page_count: int | None = None,
        freelist_count: int | None = None,
    ) -> None:
        """Record one health check of a database; an unknown reading (None: no check has
        got through yet) removes its series."""
        if healthy is None:
            self.database_healthy.remove(database)
        else:
            self.database_healthy.labels(database).set(1 if healthy else 0)
        readings = (
            (self.database_size, size_bytes),
            (self.database_wal_size, wal_size_bytes),
            (self.database_pages, page_count),
            (self.database_freelist_pages, freelist_count),
        )
        for metric, value in readings:
            if value is None:
                metric.remove(database)
            else:
                metric.labels(database).set(value)

    def backup_dir_free(self, free_bytes: int) -> None:
        self.backup_dir_free_bytes.set(free_bytes)

    def next_runs(self, runs: Mapping[str, datetime | None]) -> None:
        """Replace every policy's next run time; None or a policy left out removes its series."""
        with self._lock:
            self._next_run_policies = _replace_series(
                self.next_run,
                self._next_run_policies,
                {p: _timestamp(when) for p, when in runs.items() if when is not None},
            )

    def objectives(self, max_ages: Mapping[str, timedelta]) -> None:
        """Replace every policy's recovery point objective; a policy left out loses its series."""
        with self._lock:
            self._objective_policies = _replace_series(
                self.backup_max_age,
                self._objective_policies,
                {p: age.total_seconds() for p, age in max_ages.items()},
            )

    def overdue_checked(self, watched: Iterable[str], overdue: Iterable[str]) -> None:
        """Publish the overdue check: 1 for each policy in ``overdue``, 0 for the rest of
        ``watched`` (the policies with a max_backup_age); others lose their series."""
        late = set(overdue)
        with self._lock:
            self._overdue_policies = _replace_series(
                self.policy_overdue,
                self._overdue_policies,
                {p: 1.0 if p in late else 0.0 for p in watched},
            )

    def run_missed(self, policy: str, reason: str) -> None:
        """Count a scheduled run the scheduler dropped."""
        self.missed_runs.labels(policy, reason).inc()

    def control_request(self, op: str, *, ok: bool, busy: bool = False) -> None:
        """Count a control request; ops outside the protocol are counted as "unknown"."""
        label = op if op in CONTROL_OPS else "unknown"
        self.control_requests.labels(label, _result(ok, busy=busy)).inc()
