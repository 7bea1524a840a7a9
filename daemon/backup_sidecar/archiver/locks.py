"""Cross-process locks in the backup directory: one per database, one for the daemon.

``flock`` on files under ``<backup_dir>/.locks`` serialises backups, restores and prunes of a
database whether they come from the daemon's scheduler, its control socket or a CLI run, and
the kernel drops the lock when its holder dies.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from backup_sidecar.archiver.safefs import (
    LOCK_DIRNAME,
    LOCK_SUFFIX,
    backup_dir_fd,
    open_file,
    open_subdir,
)
from backup_sidecar.errors import BackupDirError, BusyError, OperationAbortedError

_POLL_S = 0.05


def _open_lock(backup_dir: Path, name: str) -> int:
    """The lock file ``.locks/<name>.lock``, created if missing; never through a link (a planted
    link must not make the daemon's PID truncate a database), never another uid's file."""
    where = backup_dir / LOCK_DIRNAME / f"{name}{LOCK_SUFFIX}"
    try:
        with backup_dir_fd(backup_dir) as root:
            locks = open_subdir(root, LOCK_DIRNAME, where=backup_dir / LOCK_DIRNAME, create=True)
            try:
                return open_file(locks, f"{name}{LOCK_SUFFIX}", os.O_RDWR | os.O_CREAT, where=where)
            finally:
                os.close(locks)
    except BackupDirError:
        raise
    except OSError as exc:
        raise BackupDirError(backup_dir, f"cannot create lock file: {exc.strerror}") from exc


@contextlib.contextmanager
def database_locks(
    backup_dir: Path,
    names: Sequence[str],
    *,
    wait: float | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[None]:
    """Hold the locks of ``names`` (taken in sorted order, so no two holders deadlock).

    Without ``wait`` a held lock raises BusyError at once; with it, BusyError after ``wait``
    seconds, or OperationAbortedError as soon as ``should_stop()`` says so.
    """
    fds: list[int] = []
    try:
        for name in sorted(set(names)):
            fd = _open_lock(backup_dir, f"db-{name}")
            fds.append(fd)
            _acquire(fd, name, wait, should_stop)
        yield
    finally:
        for fd in reversed(fds):
            os.close(fd)


def _acquire(fd: int, name: str, wait: float | None, should_stop: Callable[[], bool]) -> None:
    deadline = time.monotonic() + (wait or 0.0)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
        if time.monotonic() >= deadline:
            raise BusyError(name)
        if should_stop():
            raise OperationAbortedError(f"waiting for database {name!r}")
        time.sleep(_POLL_S)


class DirectoryLock:
    """The daemon's exclusive claim on a backup directory, held for its lifetime."""

    def __init__(self, backup_dir: Path) -> None:
        self.backup_dir = backup_dir
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = _open_lock(self.backup_dir, "daemon")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder_pid(fd)
            os.close(fd)
            who = f" (pid {holder})" if holder is not None else ""
            raise BackupDirError(
                self.backup_dir, f"another backup-sidecar daemon{who} is already running on it"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def held(self) -> bool:
        """Whether this claim still holds the file at ``.locks/daemon.lock``: False once that
        file was deleted or replaced (a second daemon could then lock the new one). Compares
        the held descriptor's device and inode with the path's, never following a link."""
        if self._fd is None:
            return False
        where = self.backup_dir / LOCK_DIRNAME / f"daemon{LOCK_SUFFIX}"
        try:
            on_disk = os.lstat(where)
        except OSError:
            return False
        mine = os.fstat(self._fd)
        return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _holder_pid(fd: int) -> int | None:
    """The pid a daemon holding the lock wrote into it (None: none, or not a number)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and len(text) < 20 else None
