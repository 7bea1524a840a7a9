"""Save what a restore's write replaces: the live database's committed content (its pre-image).

Called while the restore holds the database's write lock, so the saved content is exactly what
the last application commit left. WAL: a one-step backup of the committed state through another
connection; rollback journal: the database file itself, read through the descriptor the copy
holds open (closing another descriptor of the file would drop SQLite's POSIX locks).
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from backup_sidecar.archiver.livecopy import LiveWrite
from backup_sidecar.archiver.sqlitefacts import BUSY_SLICE_S, connect_readonly, copy_in_one_step
from backup_sidecar.archiver.staging import fsync_dir
from backup_sidecar.errors import DatabaseError, LockDeadlineError

#: copy_file_range cannot copy between these two files (another filesystem, old kernels).
_NO_COPY_RANGE = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP})
#: How long saving a WAL database's committed state may wait for a read lock.
_CAPTURE_TIMEOUT_S = 30.0
SAVED_MARKER = ".saved"


@dataclass(frozen=True)
class Captured:
    """The content a write replaced, saved in ``path`` (fsynced)."""

    name: str
    path: Path
    journal_mode: str
    size_bytes: int


def capture(job: LiveWrite, fd: int) -> Captured:
    """Save the live database's committed content while this process holds its write lock,
    reading the live file only through ``fd`` (see LiveCopy._run)."""
    try:
        head = os.pread(fd, 100, 0)
        if len(head) >= 20 and head[18] == 2 and head[19] == 2:
            mode = "wal"
            _backup_committed_state(job.path, job.preimage)
        else:
            mode = "delete"
            _copy_fd(fd, job.preimage)
        with job.preimage.open("rb+") as out:
            os.fsync(out.fileno())
        fsync_dir(job.preimage.parent)
    except (OSError, sqlite3.Error) as exc:
        raise DatabaseError(
            job.name, job.path, f"cannot save the content before the restore: {exc}"
        ) from exc
    return Captured(job.name, job.preimage, mode, job.preimage.stat().st_size)


def mark_saved(directory: Path) -> None:
    """Mark the pre-images complete: from here on a commit may happen, so a process that dies
    leaves content that must be kept; without the mark nothing was replaced."""
    marker = directory / SAVED_MARKER
    marker.touch(exist_ok=False)
    fsync_dir(directory)


def _copy_fd(fd: int, dest: Path) -> None:
    """The whole file behind ``fd`` into the new file ``dest``, by offset (fd stays open)."""
    size = os.fstat(fd).st_size
    with dest.open("xb") as out:
        offset = 0
        while offset < size:
            try:
                sent = os.copy_file_range(fd, out.fileno(), size - offset, offset)
            except OSError as exc:
                if exc.errno not in _NO_COPY_RANGE:
                    raise
                chunk = os.pread(fd, min(1 << 20, size - offset), offset)  # across filesystems
                sent = out.write(chunk)
            if sent == 0:
                raise OSError(f"short copy of the live database into {dest}")
            offset += sent


def _backup_committed_state(live: Path, dest: Path) -> None:
    src = connect_readonly(live, timeout=BUSY_SLICE_S)
    try:
        out = sqlite3.connect(dest)
        try:
            out.execute("PRAGMA synchronous=OFF")
            # Our write lock leaves readers free: only a checkpoint's brief lock can be met.
            deadline = time.monotonic() + _CAPTURE_TIMEOUT_S
            try:
                copy_in_one_step(src, out, deadline=deadline, clock=time.monotonic)
            except LockDeadlineError:
                raise sqlite3.OperationalError("database is locked") from None
            out.execute("PRAGMA journal_mode=DELETE").fetchone()
        finally:
            out.close()
    finally:
        src.close()
