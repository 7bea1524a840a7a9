"""Write restored databases into live ones, saving exactly what each write replaces.

Each live database is written by SQLite's backup API in steps of a few pages. The first step
takes the database's write lock (WAL: the write lock; rollback journal: EXCLUSIVE) and holds it
until the copy commits. Once every selected database's first step has succeeded, all of them are
locked, nothing they hold can change, and no application commit can slip in: the pre-image of
each is captured then (WAL: a one-step backup of the committed state through another connection
of this process; rollback journal: the database file itself, which under EXCLUSIVE is exactly
the committed state) into a file that is fsynced, and only then are the copies let go on to
commit. A lock that cannot be had within the timeout, or a failed capture, rolls every
database back: nothing changed. Commits of two files cannot be one atomic step; should one
fail after another committed, WriteIncompleteError says which were written.

No second SQLite library is involved (the writes go through the same pager the application's
connections coordinate with), so application connections see the restored content at their
next transaction, in both journal modes.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from backup_sidecar.archiver.livecopy import LiveCopy, LiveWrite, as_database_error
from backup_sidecar.archiver.preimage import Captured, capture, mark_saved
from backup_sidecar.archiver.sqlitefacts import BUSY_SLICE_S
from backup_sidecar.errors import (
    DatabaseError,
    DatabaseLockedError,
    OperationAbortedError,
    WriteIncompleteError,
)

#: How long locks already taken are held while waiting for the others (several databases):
#: then all are let go and taken again, so that one busy database does not stall the
#: application's writers on another for the whole lock timeout.
_ATTEMPT_S = 2.0


def write_locked(
    jobs: Sequence[LiveWrite],
    *,
    lock_timeout: float,
    should_stop: Callable[[], bool] = lambda: False,
) -> list[Captured]:
    """Lock every live database, capture each pre-image, then commit every copy.

    Raises DatabaseLockedError / DatabaseError / OperationAbortedError with nothing changed,
    or WriteIncompleteError once at least one database was committed."""
    deadline = time.monotonic() + lock_timeout
    with _normal_priority():
        return _retrying(
            jobs, deadline=deadline, lock_timeout=lock_timeout, should_stop=should_stop
        )


@contextlib.contextmanager
def _normal_priority() -> Iterator[None]:
    """Run the locked phase (and the copy threads, which inherit it) at niceness 0 where this
    process may: a niced thread holding the application's write lock makes the application wait
    behind every other busy process (priority inversion; 100 MB under a loaded machine: the
    application's writers stalled 9.6 s at nice 10, 4.6 s at nice 0). Restored on exit."""
    tid = threading.get_native_id()
    before: int | None = os.getpriority(os.PRIO_PROCESS, tid)
    try:
        os.setpriority(os.PRIO_PROCESS, tid, 0)
    except OSError:
        before = None  # not permitted (no CAP_SYS_NICE): stay as we are
    try:
        yield
    finally:
        if before is not None:
            os.setpriority(os.PRIO_PROCESS, tid, before)


def _retrying(
    jobs: Sequence[LiveWrite],
    *,
    deadline: float,
    lock_timeout: float,
    should_stop: Callable[[], bool],
) -> list[Captured]:
    while True:
        attempt = deadline if len(jobs) < 2 else min(deadline, time.monotonic() + _ATTEMPT_S)
        try:
            return _attempt(
                jobs, deadline=attempt, lock_timeout=lock_timeout, should_stop=should_stop
            )
        except DatabaseLockedError:
            if time.monotonic() >= deadline:
                raise


def _attempt(
    jobs: Sequence[LiveWrite],
    *,
    deadline: float,
    lock_timeout: float,
    should_stop: Callable[[], bool],
) -> list[Captured]:
    copies = [LiveCopy(job, deadline=deadline, lock_timeout=lock_timeout) for job in jobs]
    for copy in copies:
        copy.thread.start()
    try:
        _wait_all_locked(copies, should_stop)
        captured = [capture(copy.job, copy.fd) for copy in copies]
        mark_saved(copies[0].job.preimage.parent)
    except BaseException:
        for copy in copies:
            copy.abort.set()
        for copy in copies:
            copy.thread.join()
        raise
    for copy in copies:
        copy.go.set()
    for copy in copies:
        copy.thread.join()
    committed = [cap for c, cap in zip(copies, captured, strict=True) if c.error is None]
    for copy in copies:
        if copy.error is not None:
            cause = as_database_error(copy.job, copy.error)
            if committed:
                raise WriteIncompleteError(committed, copy.job.name, cause)
            raise cause
    return captured


def _wait_all_locked(copies: Sequence[LiveCopy], should_stop: Callable[[], bool]) -> None:
    for copy in copies:
        while not copy.locked.wait(BUSY_SLICE_S):
            if copy.finished.is_set():
                if copy.error is not None:
                    raise as_database_error(copy.job, copy.error)
                raise DatabaseError(copy.job.name, copy.job.path, "the copy ended before locking")
            if should_stop():
                raise OperationAbortedError("restore")
    if should_stop():
        raise OperationAbortedError("restore")
