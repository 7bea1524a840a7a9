"""Files inside the backup directory, reached without ever following a link.

The backup directory is shared ground: anyone who can write to it can plant a symbolic link
(or a hard link) where the sidecar expects its own lock file, staging directory or archive,
and a sidecar that follows it truncates, fills or deletes files elsewhere (a live database).
So every entry the sidecar creates, opens or deletes there is reached relative to a descriptor
of its parent directory, with ``O_NOFOLLOW``, and checked once open: a regular file (or
directory) of this process's uid, with one link. Anything else is refused with an
UnsafeEntryError naming the entry, never repaired or worked around.

The backup directory itself may be a symbolic link chosen by the operator (a mount, say): it
is followed like any configured path. Only what is inside it is never followed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from backup_sidecar.errors import BackupDirError, UnsafeEntryError

LOCK_DIRNAME = ".locks"
STAGING_DIRNAME = ".staging"
LOCK_SUFFIX = ".lock"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: O_NONBLOCK: opening a planted FIFO must not hang; a regular file ignores it.
_FILE_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


_KINDS = {
    stat.S_ISDIR: "a directory",
    stat.S_ISFIFO: "a FIFO",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISSOCK: "a socket",
    stat.S_ISLNK: "a symbolic link",
}


def file_kind(mode: int) -> str:
    """What a file that is not a regular one is, in words ("a FIFO"), for one-line errors."""
    return next((name for test, name in _KINDS.items() if test(mode)), "not a regular file")


@contextlib.contextmanager
def closing_fd(fd: int) -> Iterator[int]:
    """``fd``, closed when the block is left, whatever happens."""
    try:
        yield fd
    finally:
        os.close(fd)


def backup_dir_fd(backup_dir: Path) -> contextlib.AbstractContextManager[int]:
    """A descriptor of the backup directory itself (followed if it is a link: the operator's)."""
    try:
        fd = os.open(backup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise BackupDirError(backup_dir, "does not exist") from None
    except NotADirectoryError:
        raise BackupDirError(backup_dir, "is not a directory") from None
    except OSError as exc:
        raise BackupDirError(backup_dir, f"cannot be opened: {exc.strerror}") from exc
    return closing_fd(fd)


def open_subdir(parent_fd: int, name: str, *, where: Path, create: bool = False) -> int:
    """Open (with ``create``: make, mode 0700, if missing) the directory ``name`` of
    ``parent_fd``; UnsafeEntryError if it is a link, not a directory, or not ours."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=parent_fd)
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeEntryError(where, _what_is(parent_fd, name, want="a directory")) from None
        raise
    try:
        _check_owner(fd, where)
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_dir(parent_fd: int, name: str, *, backup_dir: Path, what: str) -> bool:
    """Make the new directory ``name`` (mode 0700) in ``parent_fd``: False if the name is taken,
    BackupDirError ``cannot create <what>`` for any other failure."""
    try:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
    except FileExistsError:
        return False
    except OSError as exc:
        raise BackupDirError(backup_dir, f"cannot create {what}: {exc.strerror}") from exc
    return True


def open_file(dir_fd: int, name: str, flags: int, *, where: Path, mode: int = 0o600) -> int:
    """Open the file ``name`` of ``dir_fd`` never following a link; UnsafeEntryError (and
    nothing written) unless it is a regular file of ours with a single link."""
    try:
        fd = os.open(name, flags | _FILE_FLAGS, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeEntryError(where, _what_is(dir_fd, name, want="a file")) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeEntryError(where, "is not a regular file")
        _check_owner(fd, where, st)
        if st.st_nlink != 1:
            raise UnsafeEntryError(
                where, f"has {st.st_nlink} hard links (it may be another file, e.g. a database)"
            )
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def link_target(path: Path) -> str:
    """Where the symbolic link ``path`` points (for an error message), or ``?``."""
    try:
        return str(path.readlink())
    except OSError:
        return "?"


def is_present(dir_fd: int, name: str) -> bool:
    """Whether ``name`` exists in ``dir_fd`` at all (a dangling link counts: it is taken)."""
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def remove_tree(dir_fd: int, name: str) -> None:
    """Delete the directory ``name`` of ``dir_fd`` and what it holds, following no link (a link
    inside is removed, never what it points to)."""
    if not shutil.rmtree.avoids_symlink_attacks:  # pragma: no cover - Linux always has it
        raise OSError(errno.ENOTSUP, "this platform has no symlink-safe rmtree")
    shutil.rmtree(name, dir_fd=dir_fd, ignore_errors=True)


def check_backup_dir(backup_dir: Path) -> None:
    """Refuse a backup directory whose own entries (``.locks`` and its lock files,
    ``.staging``) are links, hard-linked files, of the wrong kind or of another uid.

    Run before every operation, so a planted entry fails it with one error naming that entry
    before anything is created, truncated or deleted.
    """
    with backup_dir_fd(backup_dir) as root:
        for name in (STAGING_DIRNAME, LOCK_DIRNAME):
            if not is_present(root, name):
                continue
            fd = open_subdir(root, name, where=backup_dir / name)
            try:
                if name == LOCK_DIRNAME:
                    _check_lock_files(fd, backup_dir / name)
            finally:
                os.close(fd)


def _check_lock_files(locks_fd: int, where: Path) -> None:
    with os.scandir(locks_fd) as entries:
        names = sorted(e.name for e in entries if e.name.endswith(LOCK_SUFFIX))
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.close(open_file(locks_fd, name, os.O_RDONLY, where=where / name))


def _check_owner(fd: int, where: Path, st: os.stat_result | None = None) -> None:
    st = st or os.fstat(fd)
    if st.st_uid != os.geteuid():
        raise UnsafeEntryError(
            where, f"is owned by uid {st.st_uid}, not by this process's uid {os.geteuid()}"
        )


def _what_is(dir_fd: int, name: str, *, want: str) -> str:
    """Why ``name`` cannot be used as ``want``: the link and its target, or its kind."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return f"is not {want}"
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(name, dir_fd=dir_fd)
        except OSError:
            return "is a symbolic link"
        return f"is a symbolic link (to {target})"
    return f"is not {want}"
