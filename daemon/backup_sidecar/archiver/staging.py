"""Private work areas inside the backup directory, and the atomic file primitives.

Every operation stages its files (snapshots, extracted members, the archive being written) in
its own directory under ``<backup_dir>/.staging/``, locked with ``flock`` while in use. A crash
leaves an unlocked directory behind, which the next start removes (archiver/leftovers.py); a
directory still locked belongs to a live process and is left alone. Keeping the temporary
archive there too means a finished archive appears in the backup directory only by a single
link, never half-written.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

from backup_sidecar.archiver.safefs import (
    STAGING_DIRNAME,
    backup_dir_fd,
    check_backup_dir,
    closing_fd,
    is_present,
    make_dir,
    open_subdir,
    remove_tree,
)
from backup_sidecar.errors import ArchiveExistsError, BackupDirError, BackupNameTakenError

LOCK_NAME = ".lock"
PENDING_PREFIX = ".pending-"


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
        os.link(tmp, final, follow_symlinks=False)  # link(2) never follows ``final`` either
    except FileExistsError:
        raise ArchiveExistsError(final) from None
    fsync_dir(final.parent)
    tmp.unlink()


def free_bytes(path: Path) -> int:
    """Bytes available to this (unprivileged) process on the filesystem holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def ensure_backup_dir(backup_dir: Path) -> None:
    """Refuse a backup directory that is missing, not a directory, not writable, or holds a
    planted link or foreign file where its own entries belong."""
    if not backup_dir.exists():
        raise BackupDirError(backup_dir, "does not exist")
    if not backup_dir.is_dir():
        raise BackupDirError(backup_dir, "is not a directory")
    if not os.access(backup_dir, os.W_OK | os.X_OK):
        raise BackupDirError(backup_dir, "is not writable")
    check_backup_dir(backup_dir)


@contextlib.contextmanager
def staging_area(backup_dir: Path, *, purpose: str) -> Iterator[Path]:
    """A fresh locked directory under ``<backup_dir>/.staging``, removed on exit whatever
    happens."""
    with _staging_root(backup_dir) as root:
        name, area, lock_fd = _make_area(root, purpose, backup_dir)
        where = backup_dir / STAGING_DIRNAME / name
        try:
            yield where
        finally:
            _remove_area(root, name, area)
            os.close(area)
            os.close(lock_fd)


def _locked_new_file(dir_fd: int, name: str) -> int:
    """Create ``name`` in ``dir_fd`` already locked (FileExistsError if it exists).

    The file is created and flocked under a private name first, then linked to ``name``: a
    cleaner that finds ``name`` unlocked knows its owner is dead. Created under its own name,
    a lock (or a reservation) was unlocked for an instant, and a concurrent cleanup took it for
    an abandoned one and deleted a live staging area.
    """
    pending = f"{PENDING_PREFIX}{secrets.token_hex(8)}"
    fd = os.open(
        pending,
        os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
        dir_fd=dir_fd,
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.link(pending, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except BaseException:
        os.close(fd)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pending, dir_fd=dir_fd)
    return fd


def _staging_root(backup_dir: Path) -> contextlib.AbstractContextManager[int]:
    """A descriptor of ``<backup_dir>/.staging`` (made if missing), never through a link."""
    try:
        with backup_dir_fd(backup_dir) as top:
            root = open_subdir(
                top, STAGING_DIRNAME, where=backup_dir / STAGING_DIRNAME, create=True
            )
    except BackupDirError:
        raise
    except OSError as exc:
        raise BackupDirError(backup_dir, f"cannot create a staging area: {exc.strerror}") from exc
    return closing_fd(root)


def _make_area(root: int, purpose: str, backup_dir: Path) -> tuple[str, int, int]:
    """Create a staging area that holds its lock before it bears its name: (name, area fd,
    lock fd).

    The directory is made and locked under a private ``.pending-`` name, then renamed to
    ``<purpose>-<hex>``, so a cleaner never finds a named area without a lock. Made under its
    own name, a process killed between mkdir and its lock left a lockless area that start-up
    had to spare for the grace period (it might have been one being created right then).
    """
    for _ in range(100):
        pending = f"{PENDING_PREFIX}{secrets.token_hex(8)}"
        name = f"{purpose}-{secrets.token_hex(6)}"
        if not make_dir(root, pending, backup_dir=backup_dir, what="a staging area"):
            continue
        area = open_subdir(root, pending, where=backup_dir / STAGING_DIRNAME / pending)
        try:
            lock_fd = _locked_new_file(area, LOCK_NAME)
        except OSError as exc:
            os.close(area)
            with contextlib.suppress(OSError):
                os.rmdir(pending, dir_fd=root)
            raise BackupDirError(backup_dir, f"cannot lock a staging area: {exc.strerror}") from exc
        if is_present(root, name):  # 48 random bits: never seen, but rename would replace it
            os.close(lock_fd)
            _remove_area(root, pending, area)
            os.close(area)
            continue
        try:
            os.rename(pending, name, src_dir_fd=root, dst_dir_fd=root)
        except OSError as exc:
            os.close(lock_fd)
            _remove_area(root, pending, area)
            os.close(area)
            raise BackupDirError(
                backup_dir, f"cannot create a staging area: {exc.strerror}"
            ) from exc
        return name, area, lock_fd
    raise BackupDirError(backup_dir, "cannot create a staging area: no free name")


def _remove_area(root: int, name: str, area: int) -> None:
    """Remove a staging area with its lock file last, following no link.

    A process killed part-way then leaves a directory that still has its (now unlocked) lock,
    which the next start removes; plain rmtree could delete the lock first and leave hundreds of
    megabytes in a lockless directory that start-up must spare for a grace period (it may be one
    being created right now).
    """
    with contextlib.suppress(OSError), os.scandir(area) as entries:
        for entry in list(entries):
            if entry.name == LOCK_NAME:
                continue
            if entry.is_dir(follow_symlinks=False):
                remove_tree(area, entry.name)
            else:
                os.unlink(entry.name, dir_fd=area)
    with contextlib.suppress(OSError):
        os.unlink(LOCK_NAME, dir_fd=area)
        os.rmdir(name, dir_fd=root)


RESERVATION_SUFFIX = ".name"
_MAX_SUFFIX = 1000


@contextlib.contextmanager
def reserve_name(
    backup_dir: Path, base: str, *, exact: bool, taken: Callable[[str], str | None] | None = None
) -> Iterator[str]:
    """Claim an archive name that no other writer (thread or process) will publish meanwhile.

    A name is free when no archive has it and nobody holds its reservation (a locked file
    ``.staging/<name>.name``). With ``exact`` a taken name raises ArchiveExistsError; otherwise
    the first free of ``base``, ``base-2``, ``base-3``... is taken: default names are per second
    of the wall clock, which repeats when two backups start within a second or the clock steps
    back, and neither may overwrite an archive nor fail the backup. ``taken`` says what else
    holds a name (an incremental backup: ``jobs``), asked while its reservation is held, so two
    writers of either kind never claim one name; a name it holds is taken
    (BackupNameTakenError with ``exact``).
    """
    with backup_dir_fd(backup_dir) as top, _staging_root(backup_dir) as root:
        for n in range(1, _MAX_SUFFIX + 1):
            name = base if n == 1 else f"{base}-{n}"
            fd = _claim(top, root, name)
            if fd is None:
                if exact:
                    raise ArchiveExistsError(backup_dir / f"{name}.tar.gz")
                continue
            try:
                holder = taken(name) if taken is not None else None
                if holder is None:
                    yield name
                    return
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{name}{RESERVATION_SUFFIX}", dir_fd=root)
                os.close(fd)
            if exact:
                raise BackupNameTakenError(backup_dir, name, holder=holder)
    raise BackupDirError(backup_dir, f"no free archive name left after {base}-{_MAX_SUFFIX}")


def _claim(top: int, root: int, name: str) -> int | None:
    """Create and lock the reservation of ``name``; its fd, or None if the name is taken.

    The kernel drops the lock when the holder dies, which lets clean_leftovers tell an
    abandoned reservation from one in use.
    """
    final = f"{name}.tar.gz"
    reservation = f"{name}{RESERVATION_SUFFIX}"
    if is_present(top, final):
        return None
    try:
        fd = _locked_new_file(root, reservation)
    except FileExistsError:
        return None
    if is_present(top, final):  # published between the check and the claim
        with contextlib.suppress(FileNotFoundError):
            os.unlink(reservation, dir_fd=root)
        os.close(fd)
        return None
    return fd
