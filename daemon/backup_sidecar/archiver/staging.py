"""Private work areas inside the backup directory, and the atomic file primitives.

Every operation stages its files (snapshots, extracted members, the archive being written) in
its own directory under ``<backup_dir>/.staging/``, locked with ``flock`` while in use. A crash
leaves an unlocked directory behind, which the next start removes; a directory still locked
belongs to a live process and is left alone. Keeping the temporary archive there too means a
finished archive appears in the backup directory only by a single link, never half-written.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from backup_sidecar.errors import ArchiveExistsError, BackupDirError

STAGING_DIRNAME = ".staging"
_LOCK_NAME = ".lock"
_UNLOCKED_GRACE_S = 60.0


def fsync_dir(path: Path) -> None:
    """Make a directory entry change (create, link, unlink) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_exclusive(path: Path, *, mode: int = 0o600) -> int:
    """Open a new file for writing that must not exist yet; never follows a planted symlink."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def publish(tmp: Path, final: Path) -> None:
    """Give a fully written, fsynced file its final name without ever replacing another file.

    ``link`` fails if ``final`` exists, so two writers racing for one name cannot both win.
    """
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise ArchiveExistsError(final) from None
    fsync_dir(final.parent)
    tmp.unlink()


def free_bytes(path: Path) -> int:
    """Bytes available to this (unprivileged) process on the filesystem holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def ensure_backup_dir(backup_dir: Path) -> None:
    """Refuse a backup directory that is missing, not a directory, or not writable."""
    if not backup_dir.exists():
        raise BackupDirError(backup_dir, "does not exist")
    if not backup_dir.is_dir():
        raise BackupDirError(backup_dir, "is not a directory")
    if not os.access(backup_dir, os.W_OK | os.X_OK):
        raise BackupDirError(backup_dir, "is not writable")


@contextlib.contextmanager
def staging_area(backup_dir: Path, *, purpose: str) -> Iterator[Path]:
    """A fresh locked directory under ``<backup_dir>/.staging``, removed on exit whatever
    happens."""
    root = backup_dir / STAGING_DIRNAME
    try:
        root.mkdir(mode=0o700, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f"{purpose}-", dir=root))
    except OSError as exc:
        raise BackupDirError(backup_dir, f"cannot create a staging area: {exc.strerror}") from exc
    lock_fd = os.open(path / _LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        if not (path / _LOCK_NAME).exists():  # a cleaner raced us between mkdtemp and flock
            raise BackupDirError(backup_dir, "staging area was removed by a concurrent cleanup")
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(lock_fd)


def clean_leftovers(backup_dir: Path) -> list[Path]:
    """Remove staging directories that no running process holds; return what was removed."""
    root = backup_dir / STAGING_DIRNAME
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.is_symlink():
            continue
        if _is_abandoned(entry):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _is_abandoned(area: Path) -> bool:
    try:
        fd = os.open(area / _LOCK_NAME, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        # Died between mkdtemp and creating its lock, or is about to create it right now.
        return time.time() - area.stat().st_mtime > _UNLOCKED_GRACE_S
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    finally:
        os.close(fd)
    return True
