"""Leftovers of dead processes in ``<backup_dir>/.staging``: found and removed, nothing else.

A staging area or a name reservation (archiver/staging.py) holds an ``flock`` for as long as
its process runs; the kernel drops it when the process dies. An unlocked one is abandoned and
removed, and so, past a grace period, is an area that never got its lock or a ``.pending-``
claim file whose maker died before locking it. Never follows a link.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path

from backup_sidecar.archiver.safefs import (
    STAGING_DIRNAME,
    backup_dir_fd,
    is_present,
    open_subdir,
    remove_tree,
)
from backup_sidecar.archiver.staging import LOCK_NAME, PENDING_PREFIX, RESERVATION_SUFFIX

_UNLOCKED_GRACE_S = 60.0


def clean_leftovers(backup_dir: Path) -> list[Path]:
    """Remove staging directories and reservations that no running process holds; return what
    was removed. Never follows a link: a ``.staging`` that is one is refused (UnsafeEntryError),
    links inside it are left alone."""
    with backup_dir_fd(backup_dir) as top:
        if not is_present(top, STAGING_DIRNAME):
            return []
        root = open_subdir(top, STAGING_DIRNAME, where=backup_dir / STAGING_DIRNAME)
    removed: list[Path] = []
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            path = backup_dir / STAGING_DIRNAME / entry.name
            if entry.is_dir(follow_symlinks=False) and _area_abandoned(root, entry.name):
                remove_tree(root, entry.name)
                removed.append(path)
            elif (
                entry.name.endswith(RESERVATION_SUFFIX) or entry.name.startswith(PENDING_PREFIX)
            ) and (
                entry.is_file(follow_symlinks=False) and _reservation_abandoned(root, entry.name)
            ):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.name, dir_fd=root)
                removed.append(path)
    finally:
        os.close(root)
    return removed


def _area_abandoned(root: int, name: str) -> bool:
    """Whether nobody holds the staging area ``name``: its owner died or never got its lock."""
    try:
        area = os.open(
            name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root
        )
    except OSError:  # gone, or replaced by a link meanwhile: not ours to delete
        return False
    try:
        st = os.fstat(area)
        if st.st_uid != os.geteuid():
            return False  # not ours to delete
        try:
            lock = os.open(LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=area)
        except FileNotFoundError:
            # Died between mkdir and creating its lock, or is about to create it right now.
            return time.time() - st.st_mtime > _UNLOCKED_GRACE_S
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return True  # not a lock of ours (ours are made O_EXCL): an abandoned area
            raise
        return _unlocked(lock)
    finally:
        os.close(area)


def _reservation_abandoned(root: int, name: str) -> bool:
    """Whether nobody holds the reservation ``name`` (or, past the grace period, a claim file
    ``.pending-*`` whose maker died between creating and locking it)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=root)
    except FileNotFoundError:
        return False
    st = os.fstat(fd)
    young = name.startswith(PENDING_PREFIX) and time.time() - st.st_mtime <= _UNLOCKED_GRACE_S
    if st.st_uid != os.geteuid() or young:
        os.close(fd)
        return False
    return _unlocked(fd)


def _unlocked(fd: int) -> bool:
    """Whether nobody holds a lock on ``fd`` (closes it)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    finally:
        os.close(fd)
    return True
