"""The sidecar's metrics as one class over an injected registry: how outcomes move them.

The jobs report outcomes through small methods (`backup_finished`, `prune_finished`, ...);
nothing else creates metrics. The families themselves (names, help, labels) are declared in
`service/metric_families.py`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, Gauge

from backup_sidecar.service.metric_families import (
    CONTROL_OPS,
    RESULTS,
    SKIP_REASONS,
    MetricFamilies,
    timestamp,
)
from backup_sidecar.service.page_metric_families import PageFamilies


def _utcnow() -> datetime:
    return datetime.now(UTC)


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

        self._families = families = MetricFamilies(
            registry, version=version, clock=clock, process_metrics=process_metrics
        )
        #: Incremental backups' pages read/new, bytes stored and chain length.
        self.pages = PageFamilies(registry)

        for op in (*CONTROL_OPS, "unknown"):
            for result in RESULTS:
                families.control_requests.labels(op, result)
        for result in RESULTS:
            families.restore_runs.labels(result)
            families.drill_runs.labels(result)
            families.scrub_runs.labels(result)
        self.declare(policies=policies, databases=databases)

    @property
    def families(self) -> MetricFamilies:
        """The declared families (the offsite uploader moves its own)."""
        return self._families

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
                self._families.backup_runs.labels(policy, result)
            self._families.backup_duration.labels(policy)
            self._families.prune_deleted.labels(policy)
            self._families.prune_errors.labels(policy)
            self._families.archives.labels(policy)
            self._families.archives_damaged.labels(policy)
            self._families.backup_last_success.labels(policy)
            for reason in SKIP_REASONS:
                self._families.missed_runs.labels(policy, reason)
        del databases  # no database series has a meaningful value before the first check

    def last_success_known(self, policy: str, finished_at: datetime) -> None:
        """A policy's last success seen on disk or just made (no run is counted); it only ever
        moves forward here (a rescan finds the archive's start, the run recorded its end)."""
        at = timestamp(finished_at)
        with self._lock:
            self._set_last_success(policy, max(at, self._last_success.get(policy, at)))

    def _set_last_success(self, policy: str, at: float) -> None:
        self._last_success[policy] = at
        self._families.backup_last_success.labels(policy).set(at)
        self._families.policy_age.reset(policy, at)

    def has_last_success(self, policy: str) -> bool:
        with self._lock:
            return policy in self._last_success

    def last_success_reset(self, policy: str, finished_at: datetime | None) -> None:
        """The policy's newest archive is gone: its last success is the newest one left, or
        0 ("never") with no age series when none is left."""
        with self._lock:
            if finished_at is not None:
                self._set_last_success(policy, timestamp(finished_at))
                return
            self._last_success.pop(policy, None)
            self._families.backup_last_success.labels(policy).set(0)
            self._families.policy_age.reset(policy, None)

    def forget(self, *, policies: Iterable[str] = (), databases: Iterable[str] = ()) -> None:
        """Remove every series of policies and databases a reload removed: a removed failing
        one must not keep an alert firing (or a stale reading shown) until a restart."""
        policies, databases = set(policies), set(databases)
        self.pages.forget(policies=policies, databases=databases)
        with self._lock:
            self._policies -= policies
            self._next_run_policies -= policies
            self._objective_policies -= policies
            self._overdue_policies -= policies
            for policy in policies:
                for result in RESULTS:
                    self._families.backup_runs.remove(policy, result)
                for reason in SKIP_REASONS:
                    self._families.missed_runs.remove(policy, reason)
                for metric in self._families.by_policy():
                    metric.remove(policy)
                self._families.policy_age.reset(policy, None)
                self._last_success.pop(policy, None)
            for database in databases:
                for metric in self._families.by_database():
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
        self._families.backup_runs.labels(policy, _result(ok, busy=busy)).inc()
        if busy:
            return
        self._families.backup_duration.labels(policy).observe(duration_s)
        if ok:
            with self._lock:  # exactly: after a step back of the wall clock, too
                self._set_last_success(policy, timestamp(finished_at))
            if size_bytes is not None:
                self._families.backup_last_size.labels(policy).set(size_bytes)
            for database, seconds in (snapshot_seconds or {}).items():
                self._families.snapshot_lock.labels(database).set(seconds)

    def prune_finished(self, policy: str, deleted: int, *, errors: int = 0) -> None:
        """Count the archives a prune deleted and the ones (or the whole prune) that failed."""
        self._families.prune_deleted.labels(policy).inc(deleted)
        self._families.prune_errors.labels(policy).inc(errors)

    def archives_counted(self, counts: Mapping[str, int]) -> None:
        """Set the archive count of each policy; a known policy missing from `counts` has 0."""
        with self._lock:
            self._policies |= set(counts)
            for policy in self._policies:
                self._families.archives.labels(policy).set(counts.get(policy, 0))

    def damaged_counted(self, counts: Mapping[str, int]) -> None:
        """Set the damaged-archive count of each policy; a known policy missing has 0."""
        with self._lock:
            self._policies |= set(counts)
            for policy in self._policies:
                self._families.archives_damaged.labels(policy).set(counts.get(policy, 0))

    def scrub_finished(self, *, ok: bool, finished_at: datetime) -> None:
        self._families.scrub_runs.labels(_result(ok)).inc()
        if ok:
            self._families.scrub_last_success.set(timestamp(finished_at))

    def restore_finished(self, *, ok: bool, finished_at: datetime, busy: bool = False) -> None:
        self._families.restore_runs.labels(_result(ok, busy=busy)).inc()
        if ok:
            self._families.restore_last_success.set(timestamp(finished_at))

    def drill_finished(self, *, ok: bool, finished_at: datetime) -> None:
        self._families.drill_runs.labels(_result(ok)).inc()
        if ok:
            self._families.drill_last_success.set(timestamp(finished_at))

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
            self._families.database_healthy.remove(database)
        else:
            self._families.database_healthy.labels(database).set(1 if healthy else 0)
        readings = (
            (self._families.database_size, size_bytes),
            (self._families.database_wal_size, wal_size_bytes),
            (self._families.database_pages, page_count),
            (self._families.database_freelist_pages, freelist_count),
        )
        for metric, value in readings:
            if value is None:
                metric.remove(database)
            else:
                metric.labels(database).set(value)

    def backup_dir_free(self, free_bytes: int) -> None:
        self._families.backup_dir_free_bytes.set(free_bytes)

    def next_runs(self, runs: Mapping[str, datetime | None]) -> None:
        """Replace every policy's next run time; None or a policy left out removes its series."""
        with self._lock:
            self._next_run_policies = _replace_series(
                self._families.next_run,
                self._next_run_policies,
                {p: timestamp(when) for p, when in runs.items() if when is not None},
            )

    def objectives(self, max_ages: Mapping[str, timedelta]) -> None:
        """Replace every policy's recovery point objective; a policy left out loses its series."""
        with self._lock:
            self._objective_policies = _replace_series(
                self._families.backup_max_age,
                self._objective_policies,
                {p: age.total_seconds() for p, age in max_ages.items()},
            )

    def overdue_checked(self, watched: Iterable[str], overdue: Iterable[str]) -> None:
        """Publish the overdue check: 1 for each policy in ``overdue``, 0 for the rest of
        ``watched`` (the policies with a max_backup_age); others lose their series."""
        late = set(overdue)
        with self._lock:
            self._overdue_policies = _replace_series(
                self._families.policy_overdue,
                self._overdue_policies,
                {p: 1.0 if p in late else 0.0 for p in watched},
            )

    def run_missed(self, policy: str, reason: str) -> None:
        """Count a scheduled run the scheduler dropped."""
        self._families.missed_runs.labels(policy, reason).inc()

    def control_request(self, op: str, *, ok: bool, busy: bool = False) -> None:
        """Count a control request; ops outside the protocol are counted as "unknown"."""
        label = op if op in CONTROL_OPS else "unknown"
        self._families.control_requests.labels(label, _result(ok, busy=busy)).inc()
