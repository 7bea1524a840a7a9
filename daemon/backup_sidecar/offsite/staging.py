"""What a writer killed mid-put leaves in a ``file://`` store: ``localfs.py`` (like obstore's
LocalStore) writes each object to a staging file ``KEY#N`` beside it and renames it into place
when complete. A staging
file is never listed (the store hides ``#digits`` names) and never reused, so without this it
would stay forever, holding up to a whole archive's bytes."""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

_STAGING = re.compile(r"^(?P<name>.+)#[0-9]+$")
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_staging(root: Path, wanted: Callable[[str], bool]) -> int:
    """Remove the staging files under ``root`` of every key ``wanted`` accepts (the key is the
    path relative to ``root``, ``/``-separated); how many. Never follows a link: every entry
    is reached relative to its directory's descriptor, only regular files go, and a linked
    directory (even one swapped in while this runs) is not entered."""
    try:
        top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    removed = 0
    todo: list[tuple[int, str]] = [(top, "")]
    while todo:
        dfd, where = todo.pop()
        try:
            for name in os.listdir(dfd):  # noqa: PTH208 - a descriptor, never a path
                removed += _remove_one(dfd, name, where, wanted, todo)
        finally:
            os.close(dfd)
    return removed


def _remove_one(
    dfd: int, name: str, where: str, wanted: Callable[[str], bool], todo: list[tuple[int, str]]
) -> int:
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return 0
    if stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(OSError):  # a link swapped in meanwhile: ELOOP, not entered
            todo.append((os.open(name, _DIR, dir_fd=dfd), f"{where}/{name}" if where else name))
        return 0
    found = _STAGING.match(name)
    if found is None or not stat.S_ISREG(st.st_mode):
        return 0
    if not wanted(f"{where}/{found['name']}" if where else found["name"]):
        return 0
    try:
        os.unlink(name, dir_fd=dfd)  # a link swapped in meanwhile goes itself, never its target
    except FileNotFoundError:
        return 0
    return 1
