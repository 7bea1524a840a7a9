"""What a writer killed mid-put leaves in a ``file://`` store: obstore's LocalStore writes each
object to a staging file ``KEY#N`` beside it and renames it into place when complete. A staging
file is never listed (the store hides ``#digits`` names) and never reused, so without this it
would stay forever, holding up to a whole archive's bytes."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

_STAGING = re.compile(r"^(?P<name>.+)#[0-9]+$")


def remove_staging(root: Path, wanted: Callable[[str], bool]) -> int:
    """Remove the staging files under ``root`` of every key ``wanted`` accepts (the key is the
    path relative to ``root``, ``/``-separated); how many. Never follows a link: only regular
    files go, and a linked directory is not entered."""
    if not root.is_dir():
        return 0
    removed = 0
    for dirpath, _dirs, files in os.walk(root, followlinks=False):
        for fname in files:
            found = _STAGING.match(fname)
            if found is None:
                continue
            path = Path(dirpath) / fname
            key = (path.parent / found["name"]).relative_to(root).as_posix()
            if not wanted(key):
                continue
            try:
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    continue
                path.unlink()
            except FileNotFoundError:
                continue
            removed += 1
    return removed
