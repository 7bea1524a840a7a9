"""The status `/healthz` reports: what is wrong, held by one HealthState the daemon updates.

The database checks are `service/dbcheck.py`'s, the overdue verdicts `service/overdue.py`'s.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from backup_sidecar.service.dbcheck import DatabaseHealth
from backup_sidecar.service.overdue import OverduePolicy

#: The policy whose scheduled runs are restore drills (see service/core.py).
DRILL_POLICY = "drill"


@dataclass(frozen=True)
class HealthStatus:
    """Everything `/healthz` judges; `reasons()` lists what is wrong, empty when healthy."""

    databases: tuple[DatabaseHealth, ...] = ()
    backup_dir_free_bytes: int | None = None
    min_free_bytes: int | None = None
    overdue: tuple[OverduePolicy, ...] = ()
    last_drill_failed: bool = False
    last_drill_error: str | None = None
    #: (policy, error) of each policy whose last scheduled backup failed.
    failed_backups: tuple[tuple[str, str], ...] = ()
    #: (policy, what was dropped) of each policy whose scheduled run the scheduler skipped
    #: since its last successful run.
    missed_runs: tuple[tuple[str, str], ...] = ()
    #: (policy, archive, reason) of each policy whose newest archive is damaged.
    damaged_newest: tuple[tuple[str, str, str], ...] = ()
    #: Why the last scrub the daemon ran failed (None: it succeeded, or none ran yet).
    last_scrub_error: str | None = None
    #: Set while the daemon cannot hold its backup directory's lock (another daemon took it).
    claim_lost: str | None = None
    #: What the last scheduled offsite verify found wrong (cleared when it passes again).
    offsite_verify_problems: tuple[str, ...] = ()
    #: One reason per policy whose offsite copies lag (service/offsite_health.py).
    offsite_lagging: tuple[str, ...] = ()
    #: Set while another sidecar holds the offsite lease: a note, never a reason (a second
    #: read-only sidecar on one prefix is a legitimate setup).
    offsite_read_only: str | None = None

    def reasons(self) -> list[str]:
        found = [
            f"database {db.name!r} ({db.path}) is unhealthy: {db.error}"
            for db in self.databases
            if db.known and not db.healthy
        ]
        found += [p.reason() for p in self.overdue]
        found += [f"policy {p!r}: the last backup failed: {err}" for p, err in self.failed_backups]
        found += [f"policy {p!r}: {what}" for p, what in self.missed_runs]
        found += [
            f"policy {p!r}: the newest archive {name!r} is damaged: {why}"
            for p, name, why in self.damaged_newest
        ]
        if self.last_scrub_error is not None:
            found.append(f"the last scrub failed: {self.last_scrub_error}")
        if self.claim_lost is not None:
            found.append(self.claim_lost)
        found += list(self.offsite_verify_problems)
        found += self.offsite_lagging
        if self.last_drill_failed:
            detail = f": {self.last_drill_error}" if self.last_drill_error else ""
            found.append(f"the last restore drill failed{detail}")
        free, floor = self.backup_dir_free_bytes, self.min_free_bytes
        if free is not None and floor is not None and free < floor:
            found.append(f"backup directory has {free} bytes free, below the minimum {floor}")
        return found

    def unknown(self) -> list[str]:
        """What is not known yet (not a reason to be unhealthy): databases not checked yet."""
        return [
            f"database {db.name!r} ({db.path}) not checked yet: {db.error}"
            for db in self.databases
            if not db.known
        ]

    def notes(self) -> list[str]:
        """What is worth saying but not unhealthy: this sidecar is read-only offsite."""
        return [] if self.offsite_read_only is None else [self.offsite_read_only]

    @property
    def ok(self) -> bool:
        return not self.reasons()


class HealthState:
    """The current HealthStatus, updated by the daemon's jobs and read by the HTTP server."""

    def __init__(self, initial: HealthStatus | None = None) -> None:
        self._lock = threading.Lock()
        self._status = initial if initial is not None else HealthStatus()
        self._listeners: tuple[Callable[[], None], ...] = ()

    def listen(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every update, outside the lock (notifications read
        `current()` then: a listener never sees the updates out of order)."""
        self._listeners = (*self._listeners, listener)

    def current(self) -> HealthStatus:
        with self._lock:
            return self._status

    def update(self, change: Callable[[HealthStatus], HealthStatus]) -> HealthStatus:
        """Apply `change` to the current status atomically (no update is lost to a race)."""
        with self._lock:
            self._status = status = change(self._status)
        for listener in self._listeners:
            listener()
        return status

    def set_databases(self, databases: tuple[DatabaseHealth, ...]) -> HealthStatus:
        return self.update(lambda s: dataclasses.replace(s, databases=databases))

    def set_backup_dir_free_bytes(
        self, free: int | None, *, min_free_bytes: int | None = None
    ) -> HealthStatus:
        return self.update(
            lambda s: dataclasses.replace(
                s, backup_dir_free_bytes=free, min_free_bytes=min_free_bytes
            )
        )

    def set_overdue(self, overdue: tuple[OverduePolicy, ...]) -> HealthStatus:
        return self.update(lambda s: dataclasses.replace(s, overdue=overdue))

    def set_damaged_newest(self, damaged: tuple[tuple[str, str, str], ...]) -> HealthStatus:
        return self.update(lambda s: dataclasses.replace(s, damaged_newest=damaged))

    def backup_finished(self, policy: str, *, error: str | None = None) -> HealthStatus:
        """Record a scheduled backup's outcome: a failure stays a reason until one succeeds
        (a full or missing backup directory must not wait for `max_backup_age` to show)."""

        def change(s: HealthStatus) -> HealthStatus:
            kept = tuple((p, e) for p, e in s.failed_backups if p != policy)
            failed = (*kept, (policy, error)) if error is not None else kept
            missed = s.missed_runs if error is not None else _without(s.missed_runs, policy)
            return dataclasses.replace(s, failed_backups=failed, missed_runs=missed)

        return self.update(change)

    def scrub_finished(self, *, error: str | None = None) -> HealthStatus:
        """Record a scrub's outcome (scheduled or asked for on the socket): a failure stays a
        reason until a scrub succeeds or the scrub is unscheduled."""
        return self.update(lambda s: dataclasses.replace(s, last_scrub_error=error))

    def offsite_verify_finished(self, problems: tuple[str, ...]) -> HealthStatus:
        return self.update(lambda s: dataclasses.replace(s, offsite_verify_problems=problems))

    def set_claim_lost(self, reason: str | None) -> HealthStatus:
        return self.update(lambda s: dataclasses.replace(s, claim_lost=reason))

    def set_offsite(self, *, lagging: tuple[str, ...], read_only: str | None) -> HealthStatus:
        return self.update(
            lambda s: dataclasses.replace(s, offsite_lagging=lagging, offsite_read_only=read_only)
        )

    def forget(self, *, policies: Iterable[str], databases: Iterable[str]) -> HealthStatus:
        """Drop every state of policies and databases a reload removed (the drill's with the
        `drill` policy): what is no longer watched raises no alarm."""
        gone, dbs = set(policies), set(databases)

        def change(s: HealthStatus) -> HealthStatus:
            return dataclasses.replace(
                s,
                databases=tuple(db for db in s.databases if db.name not in dbs),
                overdue=tuple(p for p in s.overdue if p.policy not in gone),
                failed_backups=tuple((p, e) for p, e in s.failed_backups if p not in gone),
                missed_runs=tuple((p, m) for p, m in s.missed_runs if p not in gone),
                last_drill_failed=s.last_drill_failed and DRILL_POLICY not in gone,
                last_drill_error=None if DRILL_POLICY in gone else s.last_drill_error,
            )

        return self.update(change)

    def run_missed(self, policy: str, what: str) -> HealthStatus:
        """A scheduled run was dropped: a reason until the policy's next successful run."""
        return self.update(
            lambda s: dataclasses.replace(
                s, missed_runs=(*_without(s.missed_runs, policy), (policy, what))
            )
        )

    def drill_finished(self, *, ok: bool, error: str | None = None) -> HealthStatus:
        return self.update(
            lambda s: dataclasses.replace(
                s,
                last_drill_failed=not ok,
                last_drill_error=None if ok else error,
                missed_runs=_without(s.missed_runs, DRILL_POLICY) if ok else s.missed_runs,
            )
        )


def _without(pairs: tuple[tuple[str, str], ...], policy: str) -> tuple[tuple[str, str], ...]:
    return tuple((p, v) for p, v in pairs if p != policy)
