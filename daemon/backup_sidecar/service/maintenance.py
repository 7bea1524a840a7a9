"""Database maintenance in the daemon (the opt-in ``maintenance`` section, settings/maintenance).

One worker thread runs every maintenance job, so two never run at once in the daemon; each job
takes its database's lock (jobs/maintenance.py), so none runs during a backup, restore or prune
of that database, and a held lock refuses it (counted as result busy). Two triggers feed it:
the health watcher's check (a WAL past ``max_wal_bytes``: checkpoint), and each successful
backup of a policy other than pre_restore (optimize, then VACUUM when due and allowed; a
refusal is logged as ``maintenance_refused`` and counted with its reason). The thresholds are
exported per database as gauges for the alerts; a big WAL or freelist is a warning (alerts),
never a /healthz outage: the database is readable and backed up, only bigger than it should be.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from backup_sidecar.errors import BusyError
from backup_sidecar.jobs import maintenance as jobs_maintenance
from backup_sidecar.jobs.outcomes import BackupFinished, Outcome, failure_text
from backup_sidecar.service.live import LiveConfig
from backup_sidecar.service.metric_families import PREFIX

if TYPE_CHECKING:
    from backup_sidecar.service.dbcheck import DatabaseHealth

log = structlog.get_logger(__name__)

_Job = tuple[str, str, Callable[[], list[jobs_maintenance.Step]]]


class MaintenanceFamilies:
    """The thresholds (gauges, per covered database), runs and refusals (counters)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.max_wal = Gauge(
            PREFIX + "maintenance_max_wal_bytes",
            "maintenance.max_wal_bytes of a database it covers (alert: the -wal above it).",
            ["database"],
            registry=registry,
        )
        self.max_freelist = Gauge(
            PREFIX + "maintenance_max_freelist_ratio",
            "maintenance.max_freelist_ratio of a database it covers (alert: free/pages above).",
            ["database"],
            registry=registry,
        )
        self.runs = Counter(
            PREFIX + "maintenance_runs_total",
            "Maintenance operations run (op: checkpoint, optimize, vacuum; result: ok, error, "
            "busy when a backup or restore of the database held its lock).",
            ["database", "op", "result"],
            registry=registry,
        )
        self.refusals = Counter(
            PREFIX + "maintenance_refusals_total",
            "VACUUMs due but not run (reason: outside_window, over_bound, unmeasured).",
            ["database", "op", "reason"],
            registry=registry,
        )
        self.estimate = Gauge(
            PREFIX + "maintenance_vacuum_estimate_seconds",
            "The last estimate of how long a VACUUM of the database would hold writers off.",
            ["database"],
            registry=registry,
        )


class Maintainer:
    """The maintenance worker (see the module docstring): subscribe it to the outcomes and give
    its `checked` to the health watcher."""

    def __init__(self, *, live: LiveConfig, registry: CollectorRegistry) -> None:
        self._live = live
        self.families = MaintenanceFamilies(registry)
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._pending: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._thresholds: set[str] = set()
        self._thread = threading.Thread(target=self._work, name="maintenance", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)

    def idle(self) -> bool:
        """Nothing queued nor running (tests poll this)."""
        with self._lock:
            return not self._pending

    # -- triggers ------------------------------------------------------------------------
    def checked(self, results: Iterable[DatabaseHealth]) -> None:
        """After a health check: export the thresholds, queue a checkpoint of a WAL past one."""
        cfg = self._live.now.settings.maintenance
        covered = {db.name for db in results if cfg is not None and cfg.covers(db.name)}
        for name in self._thresholds - covered:  # an alarm clears when its section goes
            for family in (self.families.max_wal, self.families.max_freelist):
                _remove(family, name)
        self._thresholds = covered
        if cfg is None:
            return
        for db in results:
            if db.name not in covered:
                continue
            for family, value in (
                (self.families.max_wal, cfg.max_wal_bytes),
                (self.families.max_freelist, cfg.max_freelist_ratio),
            ):
                if value is not None:
                    family.labels(db.name).set(value)
                else:
                    _remove(family, db.name)
            wal = db.wal_size_bytes or 0
            if cfg.checkpoint and cfg.max_wal_bytes is not None and wal > cfg.max_wal_bytes:
                log.warning("database_wal_over_bound", database=db.name, wal_bytes=wal)
                self._submit(db.name, "checkpoint", self._checkpoint(db.name))

    def __call__(self, event: Outcome) -> None:
        """An outcome subscriber: after a successful backup, its databases' maintenance."""
        if not isinstance(event, BackupFinished) or not event.ok or event.policy == "pre_restore":
            return
        cfg = self._live.now.settings.maintenance
        if cfg is None or not (cfg.optimize or cfg.vacuum):
            return
        for name in sorted({*event.snapshot_seconds, *event.pages}):
            if cfg.covers(name):
                copy_s = event.snapshot_seconds.get(name)
                self._submit(name, "after_backup", self._after_backup(name, copy_s))

    # -- the worker ----------------------------------------------------------------------
    def _checkpoint(self, name: str) -> Callable[[], list[jobs_maintenance.Step]]:
        def run() -> list[jobs_maintenance.Step]:
            cfg, rt = self._live.now.settings.maintenance, self._live.now.runtime
            if cfg is None or name not in rt.databases:
                return []
            return [
                jobs_maintenance.checkpoint(rt, name, bound_s=cfg.max_writer_wait.total_seconds())
            ]

        return run

    def _after_backup(
        self, name: str, copy_s: float | None
    ) -> Callable[[], list[jobs_maintenance.Step]]:
        def run() -> list[jobs_maintenance.Step]:
            cfg, rt = self._live.now.settings.maintenance, self._live.now.runtime
            if cfg is None or name not in rt.databases:
                return []
            now = rt.clock().astimezone(rt.timezone)
            return jobs_maintenance.after_backup(rt, name, cfg=cfg, copy_s=copy_s, now=now)

        return run

    def _submit(self, name: str, kind: str, run: Callable[[], list[jobs_maintenance.Step]]) -> None:
        with self._lock:
            if (name, kind) in self._pending:
                return  # one queued is enough: it reads the database when it runs
            self._pending.add((name, kind))
        self._queue.put((name, kind, run))

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            name, kind, run = job
            try:
                self._publish(name, run())
            except BusyError as exc:
                log.info("maintenance_busy", database=name, job=kind, reason=str(exc))
                self.families.runs.labels(name, _op(kind), "busy").inc()
            except Exception as exc:  # noqa: BLE001 - a failed maintenance never stops the worker
                log.error("maintenance_failed", database=name, job=kind, error=failure_text(exc))
                self.families.runs.labels(name, _op(kind), "error").inc()
            finally:
                with self._lock:
                    self._pending.discard((name, kind))

    def _publish(self, name: str, steps: list[jobs_maintenance.Step]) -> None:
        for step in steps:
            if "estimate_s" in step.fields:
                self.families.estimate.labels(name).set(float(str(step.fields["estimate_s"])))
            if step.result == "ok":
                self.families.runs.labels(name, step.op, "ok").inc()
                log.info("maintenance_completed", database=name, op=step.op, **step.fields)
            elif step.result == "refused":
                self.families.refusals.labels(name, step.op, step.reason).inc()
                log.warning(
                    "maintenance_refused",
                    database=name,
                    op=step.op,
                    reason=step.reason,
                    **step.fields,
                )


def _op(kind: str) -> str:
    return "checkpoint" if kind == "checkpoint" else "after_backup"


def _remove(family: Gauge, name: str) -> None:
    with contextlib.suppress(KeyError):  # never set: nothing to remove
        family.remove(name)
