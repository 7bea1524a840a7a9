"""Every Prometheus metric family the sidecar exports, declared once over an injected registry.

Names, help texts, labels and buckets, and the one family computed at scrape time (a policy's
last-success age); `service/metrics.py` moves them. Names carry the `backup_sidecar_` prefix
and a base unit, only counters end in `_total`, and no label ever carries an archive name
(unbounded cardinality).
"""

from __future__ import annotations

import platform
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client import disable_created_metrics as _no_created_series
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from backup_sidecar.control.requests import OPS

PREFIX = "backup_sidecar_"
_no_created_series()  # type: ignore[no-untyped-call] # a series per child nothing reads

#: Backups take from a tenth of a second (a small database) to an hour (a large one, slow disk).
DURATION_BUCKETS = (
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0
)  # fmt: skip

#: The control socket's operations; any other op is counted as "unknown" to bound the labels.
CONTROL_OPS: tuple[str, ...] = OPS  # every op the socket serves, one list with the protocol
#: Outcomes of backups, restores, drills and control requests. `busy` is a refusal because
#: another operation held the database (nothing was attempted): not a failure, so the
#: failing-backups alert does not count it.
RESULTS = ("ok", "error", "busy")
#: Why the scheduler dropped a run (backup_sidecar.service.scheduler.SKIP_REASONS).
SKIP_REASONS = ("late", "still_running")


def timestamp(moment: datetime) -> float:
    """Seconds since the epoch; a naive datetime is refused (its meaning depends on the host)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"timestamp {moment.isoformat()} has no time zone")
    return moment.timestamp()


class PolicyAgeCollector:
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
        now = timestamp(self._clock())
        family = GaugeMetricFamily(self.name, self.help, labels=["policy"])
        with self._lock:
            last = sorted(self._last.items())
        for policy, at in last:
            family.add_metric([policy], max(0.0, now - at))
        yield family


class MetricFamilies:
    """The sidecar's metrics in `registry` (never the process-global one)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        version: str,
        clock: Callable[[], datetime],
        process_metrics: bool = False,
    ) -> None:
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
        self.offsite_last_success = gauge(
            "offsite_last_success_timestamp_seconds",
            "Unix time an archive of the policy was last confirmed offsite (absent until one is).",
            ["policy"],
        )
        self.offsite_upload_bytes = counter(
            "offsite_upload_bytes_total", "Bytes of confirmed offsite uploads (as stored)."
        )
        self.offsite_failures = counter(
            "offsite_failures_total",
            "Failed offsite passes: unavailable, refused, corrupt, decrypt, lease, credentials, "
            "key, local, prune (an object retention failed to delete) or other.",
            ["reason"],
        )
        self.offsite_pending = gauge(
            "offsite_pending_archives", "Verified local archives not yet confirmed offsite."
        )
        self.offsite_pruned = counter(
            "offsite_pruned_total",
            "Offsite objects deleted by offsite retention (policy `unconfirmed`: uploads "
            "left unfinished over a day).",
            ["policy"],
        )
        self.offsite_verify_last_success = gauge(
            "offsite_verify_last_success_timestamp_seconds",
            "Unix time the newest confirmed offsite copy of the policy last passed the "
            "scheduled verify (download, decrypt, full verify); absent until one does.",
            ["policy"],
        )
        self.offsite_verify_runs = counter(
            "offsite_verify_runs_total",
            "Scheduled offsite verifies of one copy: ok, failed, skipped (no identity file).",
            ["result"],
        )
        self.offsite_verify_failures = counter(
            "offsite_verify_failures_total",
            "Failed offsite verifies: unavailable, refused, missing, corrupt, decrypt, key, "
            "damaged (the archiver's verify refused it), local or other.",
            ["reason"],
        )
        self.offsite_lagging = gauge(
            "offsite_lagging",
            "1 while the sidecar's own check (the /healthz reason) finds the policy's offsite "
            "copies behind by more than offsite.max_age, judged on its monotonic clock; 0 "
            "otherwise. Absent without an offsite section or its max_age.",
            ["policy"],
        )
        self.offsite_read_only = gauge(
            "offsite_read_only",
            "1 while another sidecar holds the offsite prefix's lease (this one uploads nothing "
            "and prunes nothing there); 0 otherwise.",
        )
        self.policy_age = PolicyAgeCollector(clock)
        registry.register(self.policy_age)
        if process_metrics:
            ProcessCollector(registry=registry)  # process_*: the names stock dashboards use

    def by_policy(self) -> tuple[Counter | Gauge | Histogram, ...]:
        """The families whose one label is the policy."""
        return (
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
            self.offsite_last_success,
            self.offsite_lagging,
        )

    def by_database(self) -> tuple[Gauge, ...]:
        """The families whose one label is the database."""
        return (
            self.snapshot_lock,
            self.database_healthy,
            self.database_size,
            self.database_wal_size,
            self.database_pages,
            self.database_freelist_pages,
        )
