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
        _remove_area(path)
        os.close(lock_fd)


def _remove_area(path: Path) -> None:
    """Remove a staging area with its lock file last.

    A process killed part-way then leaves a directory that still has its (now unlocked) lock,
    which the next start removes; plain rmtree could delete the lock first and leave hundreds of
    megabytes in a lockless directory that start-up must spare for a grace period (it may be one
    being created right now).
    """
    with contextlib.suppress(OSError):
        for entry in path.iterdir():
            if entry.name == _LOCK_NAME:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (path / _LOCK_NAME).unlink(missing_ok=True)
        path.rmdir()


_RESERVATION_SUFFIX = ".name"
_MAX_SUFFIX = 1000


@contextlib.contextmanager
def reserve_name(backup_dir: Path, base: str, *, exact: bool) -> Iterator[str]:
    """Claim an archive name that no other writer (thread or process) will publish meanwhile.

    A name is free when no archive has it and nobody holds its reservation (a locked file
    ``.staging/<name>.name``). With ``exact`` a taken name raises ArchiveExistsError; otherwise
    the first free of ``base``, ``base-2``, ``base-3``... is taken: default names are per second
    of the wall clock, which repeats when two backups start within a second or the clock steps
    back, and neither may overwrite an archive nor fail the backup.
    """
    root = backup_dir / STAGING_DIRNAME
    try:
        root.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise BackupDirError(backup_dir, f"cannot create a staging area: {exc.strerror}") from exc
    for n in range(1, _MAX_SUFFIX + 1):
        name = base if n == 1 else f"{base}-{n}"
        path = root / f"{name}{_RESERVATION_SUFFIX}"
        fd = _claim(backup_dir, path, name)
        if fd is None:
            if exact:
                raise ArchiveExistsError(backup_dir / f"{name}.tar.gz")
            continue
        try:
            yield name
        finally:
            path.unlink(missing_ok=True)
            os.close(fd)
        return
    raise BackupDirError(backup_dir, f"no free archive name left after {base}-{_MAX_SUFFIX}")


def _claim(backup_dir: Path, path: Path, name: str) -> int | None:
    """Create and lock the reservation of ``name``; its fd, or None if the name is taken.

    The kernel drops the lock when the holder dies, which lets clean_leftovers tell an
    abandoned reservation from one in use.
    """
    final = backup_dir / f"{name}.tar.gz"
    if final.exists():
        return None
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return None
    fcntl.flock(fd, fcntl.LOCK_EX)
    if _replaced(path, fd) or final.exists():  # a cleaner raced us, or it was just published
        path.unlink(missing_ok=True)
        os.close(fd)
        return None
    return fd


def _replaced(path: Path, fd: int) -> bool:
    try:
        return path.stat().st_ino != os.fstat(fd).st_ino
    except FileNotFoundError:
        return True


def clean_leftovers(backup_dir: Path) -> list[Path]:
    """Remove staging directories that no running process holds; return what was removed."""
    root = backup_dir / STAGING_DIRNAME
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for entry in sorted(root.iterdir()):
        if entry.is_symlink():
            continue
        if entry.is_dir() and _is_abandoned(entry / _LOCK_NAME, entry):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        elif entry.name.endswith(_RESERVATION_SUFFIX) and _is_abandoned(entry, entry):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _is_abandoned(lock: Path, entry: Path) -> bool:
    """Whether nobody holds ``lock`` (guarding ``entry``): its owner died or never got it."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        # Died between mkdtemp and creating its lock, or is about to create it right now.
        return time.time() - entry.stat().st_mtime > _UNLOCKED_GRACE_S
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    finally:
        os.close(fd)
    return True
