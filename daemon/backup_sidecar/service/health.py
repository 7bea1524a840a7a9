"""Read-only health checks of the live databases, and the status `/healthz` reports.

A check opens the database through a `mode=ro` URI, so it never creates the file, never changes
its journal mode and never writes to it; it holds at most one read transaction (the length of
`quick_check` or `integrity_check`), which in WAL mode blocks no writer at all.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from backup_sidecar.archiver.model import DatabaseSpec

#: The policy whose scheduled runs are restore drills (see service/core.py).
DRILL_POLICY = "drill"
#: How many lines of a failed check a report keeps (a corrupt database can yield thousands).
MAX_CHECK_LINES = 5


@dataclass(frozen=True)
class DatabaseHealth:
    """The outcome of one check of one database; `error` says why it is unhealthy."""

    name: str
    path: Path
    exists: bool
    opens: bool
    check_result: str | None
    healthy: bool
    size_bytes: int | None = None
    wal_size_bytes: int | None = None
    page_count: int | None = None
    freelist_count: int | None = None
    error: str | None = None
    duration_s: float = 0.0
    #: False until a check completes: the application held the database locked past the
    #: check's timeout before any check got through. Unknown is not unhealthy (`error` says
    #: why it is unknown).
    known: bool = True


@dataclass(frozen=True)
class _Inspection:
    page_count: int
    freelist_count: int
    check_lines: tuple[str, ...]


class _WalNeedsWritableDirError(sqlite3.OperationalError):
    """A read-only connection to a WAL database found no -shm and could not create one."""


def check_database(
    spec: DatabaseSpec, *, integrity: Literal["quick", "full"], timeout_s: float
) -> DatabaseHealth:
    """Check one live database without writing to it; every failure becomes an unhealthy result."""
    started = time.monotonic()
    path = spec.path
    unhealthy = functools.partial(
        DatabaseHealth, name=spec.name, path=path, opens=False, check_result=None, healthy=False
    )
    try:
        st = path.stat()
    except OSError as exc:
        missing = isinstance(exc, FileNotFoundError)
        reason = "file does not exist" if missing else f"cannot stat: {exc.strerror or exc}"
        return unhealthy(exists=False, error=reason, duration_s=time.monotonic() - started)
    size, wal_size = st.st_size, _wal_size(path)
    if not stat.S_ISREG(st.st_mode):
        return unhealthy(
            exists=True,
            error="not a regular file",
            size_bytes=size,
            wal_size_bytes=wal_size,
            duration_s=time.monotonic() - started,
        )
    try:
        found = _inspect_read_only(path, integrity=integrity, timeout_s=timeout_s)
    except sqlite3.Error as exc:
        return unhealthy(
            exists=True,
            error=_describe_open_error(path, exc),
            size_bytes=size,
            wal_size_bytes=wal_size,
            duration_s=time.monotonic() - started,
        )
    check = "; ".join(found.check_lines[:MAX_CHECK_LINES])
    healthy = found.check_lines == ("ok",)
    return DatabaseHealth(
        name=spec.name,
        path=path,
        exists=True,
        opens=True,
        check_result=check,
        healthy=healthy,
        size_bytes=size,
        wal_size_bytes=wal_size,
        page_count=found.page_count,
        freelist_count=found.freelist_count,
        error=None if healthy else f"{_pragma(integrity)} failed: {check}",
        duration_s=time.monotonic() - started,
    )


def _inspect_read_only(
    path: Path, *, integrity: Literal["quick", "full"], timeout_s: float
) -> _Inspection:
    """Run the checks read-only; fall back to `immutable=1` only where that is provably safe.

    A read-only connection to a WAL database needs the -shm file, which it cannot create in a
    directory it may not write. When no -wal exists either, no connection has the database open
    and every page is in the main file, so reading it as immutable is exact, provided nothing
    starts writing meanwhile: the file is compared before and after, and a change discards the
    result and retries the normal way (a writer has created the -wal and -shm by then).
    """
    base = "file:" + quote(str(path.absolute()))
    try:
        return _inspect(f"{base}?mode=ro", integrity=integrity, timeout_s=timeout_s)
    except _WalNeedsWritableDirError:
        if _wal_path(path).exists():
            raise
    before = _fingerprint(path)
    found = _inspect(f"{base}?mode=ro&immutable=1", integrity=integrity, timeout_s=timeout_s)
    if _fingerprint(path) == before and not _wal_path(path).exists():
        return found
    return _inspect(f"{base}?mode=ro", integrity=integrity, timeout_s=timeout_s)


def _inspect(uri: str, *, integrity: Literal["quick", "full"], timeout_s: float) -> _Inspection:
    conn = sqlite3.connect(uri, uri=True, timeout=timeout_s, isolation_level=None)
    try:
        # The schema read is what fails first on a file that is not a database.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        page_count = int(conn.execute("PRAGMA page_count").fetchone()[0])
        freelist_count = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        try:
            rows = conn.execute(f"PRAGMA {_pragma(integrity)}({MAX_CHECK_LINES})").fetchall()
            lines = _check_lines(str(row[0]) for row in rows)
        except sqlite3.DatabaseError as exc:
            if _errorname(exc).startswith(("SQLITE_BUSY", "SQLITE_READONLY")):
                raise
            # SQLITE_CORRUPT and friends abort the check itself: that is its result.
            lines = (str(exc),)
        return _Inspection(page_count, freelist_count, lines)
    except sqlite3.OperationalError as exc:
        if _errorname(exc) == "SQLITE_READONLY_DIRECTORY":
            raise _WalNeedsWritableDirError(str(exc)) from exc
        raise
    finally:
        conn.close()


def _check_lines(rows: Iterable[str]) -> tuple[str, ...]:
    """The check's findings one per line, without SQLite's per-schema headings."""
    lines = [line.strip() for row in rows for line in row.splitlines() if line.strip()]
    findings = [line for line in lines if not line.startswith("***")]
    return tuple(findings or lines) or ("no result",)


def _pragma(integrity: Literal["quick", "full"]) -> str:
    return "quick_check" if integrity == "quick" else "integrity_check"


def _errorname(exc: sqlite3.Error) -> str:
    return str(getattr(exc, "sqlite_errorname", ""))


def _describe_open_error(path: Path, exc: sqlite3.Error) -> str:
    """One line on why the database could not be read at all."""
    name = _errorname(exc)
    shm_missing = not path.with_name(path.name + "-shm").exists()
    dir_read_only = not os.access(path.parent, os.W_OK)
    if isinstance(exc, _WalNeedsWritableDirError) or (
        name.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY")) and shm_missing and dir_read_only
    ):
        return (
            f"cannot open WAL database read-only: {path.name}-shm is missing and "
            f"{path.parent} is not writable ({exc})"
        )
    if name.startswith("SQLITE_BUSY"):
        return f"database is locked: {exc}"
    if name.startswith("SQLITE_NOTADB"):
        return f"not an SQLite database: {exc}"
    if name.startswith("SQLITE_CORRUPT"):
        return f"database is corrupt: {exc}"
    return f"cannot read database: {exc}"


def _wal_path(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def _wal_size(path: Path) -> int:
    try:
        return _wal_path(path).stat().st_size
    except FileNotFoundError:
        return 0


def _fingerprint(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def policy_overdue(
    last_success: datetime | None,
    max_age: timedelta,
    now: datetime,
    *,
    started_at: datetime | None = None,
) -> bool:
    """Whether a policy's newest success is older than `max_age`.

    A policy that never succeeded is overdue, unless `started_at` is given: then it gets
    `max_age` from that moment (a fresh daemon is not unhealthy before its first run is due).
    """
    reference = last_success if last_success is not None else started_at
    if reference is None:
        return True
    return now - reference > max_age


@dataclass(frozen=True)
class OverduePolicy:
    """A policy whose last success is older than its `max_backup_age`."""

    policy: str
    last_success: datetime | None
    max_age: timedelta
    #: Set when the archives' dates do not show it (a wall clock stepped back dates the newest
    #: in the future) but no new archive came for this many seconds of the monotonic clock.
    silent_s: float | None = None

    def reason(self) -> str:
        if self.silent_s is not None:
            dated = self.last_success
            newest = f" (newest archive dated {dated.isoformat()})" if dated is not None else ""
            silent = timedelta(seconds=round(self.silent_s))
            return (
                f"policy {self.policy!r}: no new backup for {silent}, longer than "
                f"{self.max_age}{newest}"
            )
        if self.last_success is None:
            return f"policy {self.policy!r} has no successful backup within {self.max_age}"
        return (
            f"policy {self.policy!r}: last successful backup at {self.last_success.isoformat()} "
            f"is older than {self.max_age}"
        )


def overdue_policies(
    last_success: Mapping[str, datetime | None],
    max_age: Mapping[str, timedelta],
    *,
    now: datetime,
    started_at: datetime | Mapping[str, datetime] | None = None,
    silent_s: Mapping[str, float] | None = None,
) -> tuple[OverduePolicy, ...]:
    """The policies with a `max_age` whose last success (None: never) is too old, by name.

    `started_at` is when the never-succeeded policies' grace began: one moment for all, or one
    per policy (a policy missing from the mapping has none). `silent_s` is, per policy, how
    long (monotonic seconds) no new archive of it appeared: longer than `max_age` is overdue
    whatever the archives' dates say, so the check never stays silent while no backup runs."""

    def grace(policy: str) -> datetime | None:
        if isinstance(started_at, Mapping):
            return started_at.get(policy)
        return started_at

    found = []
    for policy, age in sorted(max_age.items()):
        last = last_success.get(policy)
        if policy_overdue(last, age, now, started_at=grace(policy)):
            found.append(OverduePolicy(policy, last, age))
            continue
        silent = (silent_s or {}).get(policy)
        if silent is not None and silent > age.total_seconds():
            found.append(OverduePolicy(policy, last, age, silent_s=silent))
    return tuple(found)


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

    @property
    def ok(self) -> bool:
        return not self.reasons()


class HealthState:
    """The current HealthStatus, updated by the daemon's jobs and read by the HTTP server."""

    def __init__(self, initial: HealthStatus | None = None) -> None:
        self._lock = threading.Lock()
        self._status = initial if initial is not None else HealthStatus()

    def current(self) -> HealthStatus:
        with self._lock:
            return self._status

    def update(self, change: Callable[[HealthStatus], HealthStatus]) -> HealthStatus:
        """Apply `change` to the current status atomically (no update is lost to a race)."""
        with self._lock:
            self._status = change(self._status)
            return self._status

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

    def set_claim_lost(self, reason: str | None) -> HealthStatus:
        return self.update(lambda s: dataclasses.replace(s, claim_lost=reason))

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
