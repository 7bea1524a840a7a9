"""The backup directory's creation sequence: the order archives were made in, clock or no clock.

Every archive the sidecar writes carries ``sequence`` in its metadata: one more than the last
number given out in this backup directory. Archives are ordered by it (``ArchiveInfo.newness``)
for retention, `list`, the drill and the last success, so a wall clock stepped back a day does
not make yesterday's archives "newer" than the one just written, and an archive dated in the
future stays below every one written after it.

The last number given out is kept in ``.locks/sequence.lock`` (a lock file like the others:
never followed through a link, flocked while a number is taken). It is a cache, never trusted
alone: missing or unreadable, it is rebuilt from the highest sequence on disk; lower than an
archive on disk (restored from an old copy, or archives copied in), it is raised by
``reconcile`` whenever the daemon lists the directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from backup_sidecar.archiver.catalog import list_archives
from backup_sidecar.archiver.locks import _acquire, _open_lock
from backup_sidecar.archiver.manifest import MAX_SEQUENCE
from backup_sidecar.archiver.safefs import LOCK_DIRNAME
from backup_sidecar.errors import BackupDirError

_COUNTER = "sequence"
#: How long a backup waits for another process taking a number (it holds the lock for a
#: read and a write, or for one listing while rebuilding).
_WAIT_S = 30.0


def highest(sequences: Iterable[int | None]) -> int:
    """The highest sequence among ``sequences`` (0 when none has one)."""
    return max((s for s in sequences if s is not None), default=0)


def next_sequence(backup_dir: Path) -> int:
    """Take the next creation sequence of ``backup_dir`` (one more than any given out)."""
    with _counter(backup_dir) as fd:
        stored = _read(fd)
        if stored is None:  # lost or unreadable: rebuilt from what is on disk
            stored = highest(a.sequence for a in list_archives(backup_dir))
        if stored >= MAX_SEQUENCE:
            # Never hand out a number twice: two archives with one sequence would be ordered by
            # their wall-clock dates again. Only a planted counter or archive gets here.
            raise BackupDirError(
                backup_dir,
                f"the creation sequence is at its maximum ({MAX_SEQUENCE}): an archive or "
                f"{LOCK_DIRNAME}/{_COUNTER}.lock claiming it was planted; remove it",
            )
        taken = stored + 1
        _write(fd, taken)
        return taken


def reconcile(backup_dir: Path, *, seen: int) -> bool:
    """Raise the counter to ``seen`` (the highest sequence a listing found) if it is lower, or
    unreadable; True if it was changed."""
    if seen <= 0:
        return False
    with _counter(backup_dir) as fd:
        stored = _read(fd)
        if stored is not None and stored >= seen:
            return False
        _write(fd, seen)
        return True


@contextlib.contextmanager
def _counter(backup_dir: Path) -> Iterator[int]:
    fd = _open_lock(backup_dir, _COUNTER)
    try:
        _acquire(fd, _COUNTER, _WAIT_S, lambda: False)
        yield fd
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _read(fd: int) -> int | None:
    text = os.pread(fd, 64, 0).strip()
    if not text.isdigit() or len(text) > 19:
        return None
    value = int(text)
    return value if value <= MAX_SEQUENCE else None


def _write(fd: int, value: int) -> None:
    data = f"{value}\n".encode()
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))
    os.fsync(fd)
