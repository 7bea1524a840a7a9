"""Take a consistent copy of a live database with SQLite's online backup API, in one step.

One step (``pages=-1``) copies every page inside a single read transaction, so the copy is a
snapshot of one committed state even while the application writes. A stepped backup would
restart on every foreign write and never finish under steady writes; copying the file would
lose what is still in ``-wal``.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from backup_sidecar.archiver.model import DatabaseSpec
from backup_sidecar.archiver.sqlitefacts import (
    BUSY_SLICE_S,
    connect_readonly,
    copy_in_one_step,
    has_sqlite_header,
    not_regular_reason,
)
from backup_sidecar.archiver.staging import create_exclusive
from backup_sidecar.errors import (
    DatabaseError,
    DatabaseLockedError,
    LockDeadlineError,
    OperationAbortedError,
    StopRequestedError,
)


@dataclass(frozen=True)
class Snapshot:
    spec: DatabaseSpec
    staged: Path
    source_journal_mode: str
    sqlite_version: str
    #: The one-step copy, any wait for the application's write lock included: the source is
    #: read-locked through it, so a rollback-journal application's writers wait up to this long.
    copy_s: float


def check_source(spec: DatabaseSpec) -> None:
    """Refuse a source that is missing, a directory, not a regular file (a FIFO, a device), or
    not an SQLite database."""
    path = spec.path
    if not path.exists():
        raise DatabaseError(spec.name, path, "does not exist")
    if path.is_dir():
        raise DatabaseError(spec.name, path, "is a directory, not a database file")
    if problem := not_regular_reason(path):  # a FIFO is 0 bytes: it was called "empty"
        raise DatabaseError(spec.name, path, problem)
    if not os.access(path, os.R_OK):
        raise DatabaseError(spec.name, path, "is not readable")
    if path.stat().st_size == 0:
        raise DatabaseError(spec.name, path, "is empty (0 bytes)")
    if not has_sqlite_header(path):
        raise DatabaseError(spec.name, path, "is not an SQLite database")


def take_snapshot(
    spec: DatabaseSpec,
    *,
    dest: Path,
    lock_timeout: float,
    should_stop: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.monotonic,
) -> Snapshot:
    """Copy ``spec`` into the new file ``dest`` and switch the copy to ``journal_mode=DELETE``."""
    check_source(spec)
    deadline = clock() + lock_timeout
    os.close(create_exclusive(dest))
    try:
        src = connect_readonly(spec.path, timeout=BUSY_SLICE_S)
    except sqlite3.Error as exc:
        raise DatabaseError(spec.name, spec.path, f"cannot be opened: {exc}") from exc
    try:
        journal_mode = _journal_mode(spec, src, lock_timeout=lock_timeout, clock=clock)

        dst = sqlite3.connect(dest)
        try:
            # The staged copy is scratch: only the archive is made durable. Committing the copy
            # with a full fsync flushed it whole to disk, a 1 GiB burst that stalled the
            # application's own commits by 60-250 ms; now a copy deleted within the kernel's
            # writeback delay never reaches the disk at all.
            dst.execute("PRAGMA synchronous=OFF")
            copy_started = clock()
            copy_in_one_step(src, dst, deadline=deadline, clock=clock, should_stop=should_stop)
            copy_s = clock() - copy_started
            dst.execute("PRAGMA journal_mode=DELETE").fetchone()
        finally:
            dst.close()
    except LockDeadlineError:
        raise DatabaseLockedError(spec.name, spec.path, lock_timeout) from None
    except StopRequestedError:
        raise OperationAbortedError(f"snapshot of {spec.name!r}") from None
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL":
            # The staged copy ran out of space: the backup directory's fault, not the source's.
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dest)) from exc
        raise DatabaseError(spec.name, spec.path, f"snapshot failed: {exc}") from exc
    finally:
        src.close()
    return Snapshot(
        spec=spec,
        staged=dest,
        source_journal_mode=journal_mode,
        sqlite_version=sqlite3.sqlite_version,
        copy_s=copy_s,
    )


def _journal_mode(
    spec: DatabaseSpec,
    conn: sqlite3.Connection,
    *,
    lock_timeout: float,
    clock: Callable[[], float],
) -> str:
    """Read the source's journal mode, retrying while a writer holds it exclusively."""
    deadline = clock() + lock_timeout
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            if clock() > deadline:
                raise DatabaseLockedError(spec.name, spec.path, lock_timeout) from None
