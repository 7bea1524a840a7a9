"""The store's directories, its lock and its atomic writes, never following a link.

Layout under the store's root (the root itself is the operator's path, followed like any
configured path; nothing inside it is)::

    .lock                   flock: backups, deletes and GC exclusive, rebuilds shared
    packs/<32 hex>.pack     compressed pages, immutable once renamed into place
    manifests/<name>.json   one backup: every page's location, the image's SHA-256
    */.tmp-*                a write in progress; a crash leaves it for the next GC

Every file appears under its final name only by a rename (or link) of a complete, fsynced
temporary file, and the directory is fsynced after: a crash leaves the old state or the new.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from backup_sidecar.archiver.safefs import open_file, open_subdir
from backup_sidecar.errors import BackupDirError, PageStoreBusyError

PACKS = "packs"
MANIFESTS = "manifests"
TMP_PREFIX = ".tmp-"
_LOCK = ".lock"
_POLL_S = 0.05
LOCK_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class StoreDirs:
    """Open descriptors of the store's root and its two subdirectories."""

    root: Path
    root_fd: int
    packs_fd: int
    manifests_fd: int

    @property
    def packs(self) -> Path:
        return self.root / PACKS

    @property
    def manifests(self) -> Path:
        return self.root / MANIFESTS


@contextlib.contextmanager
def open_store(root: Path, *, exclusive: bool, timeout_s: float) -> Iterator[StoreDirs]:
    """The store's directories (created if missing) under its lock, held until exit."""
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o700, parents=True)
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise BackupDirError(root, f"cannot be opened: {exc.strerror}") from exc
    with contextlib.ExitStack() as stack:
        stack.callback(os.close, root_fd)
        lock_fd = open_file(root_fd, _LOCK, os.O_RDWR | os.O_CREAT, where=root / _LOCK)
        stack.callback(os.close, lock_fd)
        _lock(lock_fd, exclusive=exclusive, timeout_s=timeout_s, root=root)
        fds = [open_subdir(root_fd, n, where=root / n, create=True) for n in (PACKS, MANIFESTS)]
        for fd in fds:
            stack.callback(os.close, fd)
        yield StoreDirs(root=root, root_fd=root_fd, packs_fd=fds[0], manifests_fd=fds[1])


def _lock(fd: int, *, exclusive: bool, timeout_s: float, root: Path) -> None:
    mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise PageStoreBusyError(root, timeout_s) from None
            time.sleep(_POLL_S)  # polling a lock held by another process: no event to wait on
        else:
            return


def temp_name() -> str:
    return f"{TMP_PREFIX}{secrets.token_hex(8)}"


def create_temp(dir_fd: int, *, where: Path) -> tuple[str, int]:
    """A new temporary file in ``dir_fd`` (``O_EXCL``, 0600): its name and a write descriptor."""
    name = temp_name()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    return name, open_file(dir_fd, name, flags, where=where / name)


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def publish(dir_fd: int, tmp: str, name: str, *, replace: bool) -> None:
    """Make the complete temporary file ``tmp`` appear as ``name``, durably.

    Without ``replace`` an existing ``name`` is never overwritten (link, then drop the
    temporary name): FileExistsError, and ``tmp`` stays for the caller to remove.
    """
    if replace:
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    else:
        os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        os.unlink(tmp, dir_fd=dir_fd)
    os.fsync(dir_fd)


def discard(dir_fd: int, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


def write_file(dir_fd: int, name: str, data: bytes, *, where: Path, replace: bool) -> None:
    """Write ``data`` as ``name`` atomically: temporary file, fsync, rename/link, fsync dir."""
    tmp, fd = create_temp(dir_fd, where=where)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        publish(dir_fd, tmp, name, replace=replace)
    finally:
        discard(dir_fd, tmp)


def read_file(dir_fd: int, name: str, *, where: Path, limit: int) -> bytes:
    """The bytes of the regular file ``name`` (no link followed); OSError(EFBIG) past ``limit``."""
    fd = open_file(dir_fd, name, os.O_RDONLY, where=where)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(where))
    return data


def listdir(dir_fd: int, suffix: str) -> list[str]:
    """Names in ``dir_fd`` ending in ``suffix`` (temporary files excluded), sorted."""
    with os.scandir(dir_fd) as entries:
        names = [e.name for e in entries]
    return sorted(n for n in names if n.endswith(suffix) and not n.startswith(TMP_PREFIX))


def list_temps(dir_fd: int) -> list[str]:
    with os.scandir(dir_fd) as entries:
        return sorted(e.name for e in entries if e.name.startswith(TMP_PREFIX))
