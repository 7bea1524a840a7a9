"""One live database's stepped copy: SQLite's backup API writing the staged copy into it.

The copy runs on its own thread. Its first step takes the live database's write lock; it then
waits, holding the lock, until the coordinator (archiver/livewrite.py) has every database
locked and their content saved, and lets it go on to commit, or aborts it (rolled back).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from backup_sidecar.archiver.sqlitefacts import BUSY_SLICE_S, TOO_DAMAGED, connect_readonly
from backup_sidecar.errors import DatabaseError, DatabaseLockedError, OperationAbortedError

#: Pages per step: the first step must not fill the page cache (2 MB by default) so that, in
#: rollback-journal mode, nothing reaches the live file before the pre-image is captured.
_STEP_PAGES = 16
#: The writing connection's page cache (KiB).
_CACHE_KIB = 65536


@dataclass(frozen=True)
class LiveWrite:
    """One live database to overwrite with ``staged``; its pre-image goes to ``preimage``."""

    name: str
    path: Path
    staged: Path
    preimage: Path


class _AbortError(Exception):
    """Raised in a copy's progress callback to roll it back."""


class LiveCopy:
    """One database's stepped copy, run on its own thread."""

    def __init__(self, job: LiveWrite, *, deadline: float, lock_timeout: float) -> None:
        self.job = job
        self.deadline = deadline
        self.lock_timeout = lock_timeout
        self.locked = threading.Event()
        self.finished = threading.Event()
        self.go = threading.Event()
        self.abort = threading.Event()
        self.error: BaseException | None = None
        self.fd = -1
        self.thread = threading.Thread(target=self._run, name=f"restore-{job.name}", daemon=True)

    def _progress(self, status: int, remaining: int, total: int) -> None:
        if self.abort.is_set():
            raise _AbortError
        if self.locked.is_set():
            return
        if status == sqlite3.SQLITE_OK:
            self.locked.set()
            while not self.go.wait(BUSY_SLICE_S):
                if self.abort.is_set():
                    raise _AbortError
            if self.abort.is_set():
                raise _AbortError
        elif time.monotonic() > self.deadline:
            raise DatabaseLockedError(self.job.name, self.job.path, self.lock_timeout)

    def _run(self) -> None:
        job = self.job
        try:
            pages = _pages_per_step(job.staged)
            src = connect_readonly(job.staged)
            try:
                # Opened before SQLite locks the file and closed after it let go: closing any
                # descriptor of a file drops every POSIX lock this process holds on it, SQLite's
                # included, so the capture reads through this one and never opens its own.
                self.fd = os.open(job.path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    dst = sqlite3.connect(job.path, timeout=BUSY_SLICE_S, check_same_thread=False)
                    try:
                        # Fewer cache spills (each one syncs the rollback journal) while the
                        # application waits; the first step is far smaller either way.
                        with contextlib.suppress(sqlite3.DatabaseError):  # a damaged schema
                            dst.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
                        src.backup(dst, pages=pages, progress=self._progress, sleep=BUSY_SLICE_S)
                    finally:
                        dst.close()
                finally:
                    os.close(self.fd)
            finally:
                src.close()
        except BaseException as exc:  # noqa: BLE001 - handed to the coordinating thread
            self.error = exc
        finally:
            self.finished.set()


def as_database_error(job: LiveWrite, exc: BaseException) -> BaseException:
    """What a copy's failure means to the caller: a DatabaseError naming the database, or
    OperationAbortedError for a copy that was told to roll back."""
    if isinstance(exc, DatabaseError | OperationAbortedError):
        return exc
    if isinstance(exc, _AbortError):
        return OperationAbortedError("restore")
    if isinstance(exc, sqlite3.Error):
        hint = TOO_DAMAGED if getattr(exc, "sqlite_errorname", "") == "SQLITE_CORRUPT" else ""
        return DatabaseError(job.name, job.path, f"restore failed and was rolled back: {exc}{hint}")
    return exc


def _pages_per_step(staged: Path) -> int:
    """Fewer pages than the staged copy has, so that the first step never commits."""
    conn = connect_readonly(staged)
    try:
        count = int(conn.execute("PRAGMA page_count").fetchone()[0])
    finally:
        conn.close()
    if count < 2:
        raise DatabaseError("staged copy", staged, "has fewer than two pages")
    return min(_STEP_PAGES, count - 1)
