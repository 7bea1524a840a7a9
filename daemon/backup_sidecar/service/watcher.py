"""The health watcher: on its interval, read-only checks of every database and the backup
directory, published to the metrics and to `/healthz`."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import structlog

from backup_sidecar import archiver
from backup_sidecar.archiver import DatabaseSpec, free_bytes
from backup_sidecar.service.archives import damaged_newest, with_page_successes
from backup_sidecar.service.dbcheck import DatabaseHealth, check_database
from backup_sidecar.service.health import HealthState
from backup_sidecar.service.live import LiveConfig
from backup_sidecar.service.metrics import Metrics
from backup_sidecar.service.overdue import overdue_policies
from backup_sidecar.service.scheduler import PolicyScheduler
from backup_sidecar.service.successes import SuccessLedger

log = structlog.get_logger(__name__)

#: How long one check waits for a lock the application holds.
LOCK_TIMEOUT_S = 5.0
#: A wall-clock change this much larger or smaller than the monotonic one between two checks is
#: a step (NTP slews at most ~0.5 ms/s; a step is what a VM resume or `date -s` does).
CLOCK_STEP_S = 2.0


def _fingerprint(path: Path) -> tuple[tuple[int, int, int] | None, ...]:
    """Identity, size and modification time of a database file and its -wal (None: absent)."""

    def one(p: Path) -> tuple[int, int, int] | None:
        try:
            st = p.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    return (one(path), one(path.with_name(path.name + "-wal")))


class HealthWatcher:
    """Runs `check_once` now and then every `interval` seconds until stopped.

    Its collaborators: the configuration now (``live``, whose publishing lock it publishes
    under), the health state, the metrics and the success ledger it publishes to, the scan of
    the backup directory's archives, the claim it keeps on that directory, and the scheduler
    (None until it runs) it tells about a stepped wall clock and asks for the next runs."""

    def __init__(
        self,
        *,
        interval: float,
        live: LiveConfig,
        health: HealthState,
        metrics: Metrics,
        ledger: SuccessLedger,
        scan_archives: Callable[[], list[archiver.ArchiveInfo]],
        ensure_backup_dir: Callable[[], None],
        scheduler: Callable[[], PolicyScheduler | None],
        offsite_check: Callable[[], None] | None = None,
        maintenance: Callable[[tuple[DatabaseHealth, ...]], None] | None = None,
    ) -> None:
        self._live = live
        self._health = health
        self._metrics = metrics
        self._ledger = ledger
        self._scan_archives = scan_archives
        self._ensure_backup_dir = ensure_backup_dir
        self._scheduler = scheduler
        self._offsite_check = offsite_check
        self._maintenance = maintenance
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="health-watcher", daemon=True)
        self._clocks = (time.time(), time.monotonic())
        #: database name -> (fingerprint at its last real check, monotonic time of that check)
        self._seen: dict[str, tuple[object, float]] = {}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            try:
                self.check_once()
            except Exception:
                log.exception("health_check_crashed")
            if self._stop.wait(self._interval):
                return

    def _check(
        self,
        spec: DatabaseSpec,
        mode: Literal["quick", "full"],
        previous: DatabaseHealth | None,
        recheck_s: float,
    ) -> DatabaseHealth:
        """One check; a database the application holds locked past the timeout keeps its last
        known state (a long write transaction is not a sick database; before any check got
        through, it is unknown, which is not unhealthy either), and one whose file and
        -wal did not change since the last check keeps it until `recheck_s` have passed."""
        current = _fingerprint(spec.path)
        seen = self._seen.get(spec.name)
        if (
            previous is not None
            and seen is not None
            and seen[0] == current
            and time.monotonic() - seen[1] < recheck_s
        ):
            return previous
        result = check_database(spec, integrity=mode, timeout_s=LOCK_TIMEOUT_S)
        if result.opens or not (result.error or "").startswith("database is locked"):
            self._seen[spec.name] = (_fingerprint(spec.path), time.monotonic())
            return result
        log.info("database_check_deferred", database=spec.name, reason=result.error)
        if previous is not None:
            return previous
        return dataclasses.replace(result, known=False)

    def _watch_clock(self) -> None:
        """Retime every schedule when the wall clock was stepped since the last check."""
        wall, mono = time.time(), time.monotonic()
        step = (wall - self._clocks[0]) - (mono - self._clocks[1])
        self._clocks = (wall, mono)
        scheduler = self._scheduler()
        if abs(step) > CLOCK_STEP_S and scheduler is not None:
            log.warning("wall_clock_stepped", seconds=round(step, 1))
            scheduler.clock_stepped()

    def check_once(self) -> None:
        self._watch_clock()
        cfg, rt = self._live.now.settings, self._live.now.runtime
        mode: Literal["quick", "full"] = "quick" if cfg.health.quick_check else "full"
        previous = {db.name: db for db in self._health.current().databases}
        recheck_s = cfg.health.recheck_unchanged.total_seconds()
        checked = tuple(
            self._check(spec, mode, previous.get(spec.name), recheck_s)
            for spec in rt.databases.values()
        )
        self._ensure_backup_dir()  # a deleted one is recreated within one interval, not one period
        try:
            free = free_bytes(rt.backup_dir)
            archives: list[archiver.ArchiveInfo] | None = self._scan_archives()
        except OSError as exc:
            log.error("backup_dir_unreadable", path=str(rt.backup_dir), error=str(exc))
            free, archives = 0, None
        with self._live.publishing:
            self._publish(checked, free, archives)

    def _publish(
        self,
        checked: tuple[DatabaseHealth, ...],
        free: int,
        archives: list[archiver.ArchiveInfo] | None,
    ) -> None:
        """Publish a check under the publishing lock, against the configuration as it is now:
        a database or policy a reload removed meanwhile is not brought back."""
        now, metrics, health = self._live.now, self._metrics, self._health
        cfg, rt = now.settings, now.runtime
        for name in self._seen.keys() - rt.databases.keys():
            del self._seen[name]
        results = tuple(db for db in checked if db.name in rt.databases)
        for db in results:
            metrics.database_observed(
                db.name,
                healthy=db.healthy if db.known else None,
                size_bytes=db.size_bytes,
                wal_size_bytes=db.wal_size_bytes,
                page_count=db.page_count,
                freelist_count=db.freelist_count,
            )
            if db.known and not db.healthy:
                log.warning("database_unhealthy", database=db.name, error=db.error)
        health.set_databases(results)
        if self._maintenance is not None:  # thresholds exported, a big WAL's checkpoint queued
            self._maintenance(results)
        metrics.backup_dir_free(free)
        health.set_backup_dir_free_bytes(free)
        # Incremental backups count beside the archives (their policy's archives, damaged).
        successes = with_page_successes(rt.backup_dir, archives) if archives is not None else []
        metrics.archives_counted(Counter(a.policy for a in successes))
        if archives is not None:  # an unreadable directory says nothing about what it holds
            self._ledger.sync(successes, policies=cfg.policies)
        metrics.damaged_counted(
            Counter(a.policy for a in successes if a.status is archiver.ArchiveStatus.DAMAGED)
        )
        if archives is not None:
            health.set_damaged_newest(damaged_newest(successes))
        overdue = overdue_policies(
            self._ledger.newest(),
            cfg.health.max_backup_age,
            now=datetime.now(UTC),
            started_at=self._ledger.grace_from(),
            silent_s=self._ledger.silent_for(),
        )
        health.set_overdue(overdue)
        metrics.overdue_checked(cfg.health.max_backup_age, (p.policy for p in overdue))
        if self._offsite_check is not None:  # the offsite lag ages while the uploader waits
            self._offsite_check()
        scheduler = self._scheduler()
        if scheduler is not None:
            metrics.next_runs(scheduler.next_run_times())
