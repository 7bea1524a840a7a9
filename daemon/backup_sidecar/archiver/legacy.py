"""Read the seed's own archives (backup_manager.py) for `list`: metadata and members in any order.

The seed staged its files in a directory and added them in the directory's order, so its
``backup_metadata.json`` may come after the databases, and its ``includes`` flags name what was
asked for, not what was stored. Finding the metadata and the databases an archive holds means
reading its tar headers, which means decompressing the members in front of them: the scan is
bounded (``Limits.legacy_scan_bytes`` / ``legacy_scan_ratio``) and its result is remembered per
file identity (device, inode, size, change times) and bound, so a daemon listing the directory every
health check pays for it once.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import BinaryIO

from backup_sidecar.archiver import manifest as mf
from backup_sidecar.archiver.gzipstream import open_strict
from backup_sidecar.archiver.model import Limits
from backup_sidecar.archiver.seedfiles import KNOWN_DATABASE_FILES
from backup_sidecar.archiver.tarstream import TarReader
from backup_sidecar.errors import (
    CorruptArchiveError,
    GzipFormatError,
    ManifestError,
    OutputLimitError,
    TarFormatError,
)

#: The member names a seed archive may hold.
SEED_DATABASE_FILES = frozenset(KNOWN_DATABASE_FILES.values())
_CACHE_SIZE = 256

_Key = tuple[int, ...]
_cache: OrderedDict[_Key, mf.Manifest | str] = OrderedDict()
_cache_lock = threading.Lock()


def no_metadata(files: list[str]) -> str:
    """The fault of a tar holding seed database members but no metadata at all."""
    held = ", ".join(repr(f) for f in files) or "no database"
    return (
        f"holds no {mf.METADATA_MEMBER} (it has {held}): not written by backup_manager.py "
        "nor backup-sidecar, so nothing says what it is"
    )


def metadata_not_first(first: str) -> str:
    """The fault of a backup-sidecar (format 2) archive whose metadata is not its first member."""
    return f"first member is {first!r}, not {mf.METADATA_MEMBER}"


def scan_seed_archive(raw: BinaryIO, *, name: str, limits: Limits) -> mf.Manifest:
    """The legacy manifest of the seed archive open as ``raw`` (read from its start), with the
    databases it holds; CorruptArchiveError when it is not a readable seed archive."""
    st = os.fstat(raw.fileno())
    bound = min(
        limits.max_total_bytes,
        max(limits.legacy_scan_bytes, limits.legacy_scan_ratio * st.st_size),
    )
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, bound)
    with _cache_lock:
        known = _cache.get(key)
        if known is not None:
            _cache.move_to_end(key)
    if known is None:
        try:
            known = _scan(raw, name=name, bound=bound, limits=limits)
        except CorruptArchiveError as exc:
            known = exc.fault
        except (GzipFormatError, TarFormatError, ManifestError) as exc:
            known = str(exc)
        with _cache_lock:
            _cache[key] = known
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    if isinstance(known, str):
        raise CorruptArchiveError(name, known)
    return known


def _scan(raw: BinaryIO, *, name: str, bound: int, limits: Limits) -> mf.Manifest:
    raw.seek(0)
    tar = TarReader(open_strict(raw, limit=bound))
    first = ""
    meta: bytes | None = None
    files: list[str] = []
    try:
        for member in tar.members():
            first = first or member.name
            if member.name == mf.METADATA_MEMBER:
                if meta is not None:
                    raise CorruptArchiveError(name, f"duplicate member {member.name!r}")
                if member.size > limits.max_metadata_bytes:
                    raise CorruptArchiveError(
                        name, f"{mf.METADATA_MEMBER} is too large ({member.size} bytes)"
                    )
                meta = tar.read(member.size)
            elif member.name not in SEED_DATABASE_FILES:
                raise CorruptArchiveError(name, f"unexpected member {member.name!r}")
            elif member.name in files:
                raise CorruptArchiveError(name, f"duplicate member {member.name!r}")
            else:
                files.append(member.name)
    except OutputLimitError:
        raise CorruptArchiveError(
            name,
            f"its members do not end within the first {bound} bytes, the most list reads of "
            "an archive whose metadata is not first or is the seed's (verify reads it all)",
        ) from None
    if meta is None:
        raise CorruptArchiveError(name, no_metadata(files))
    manifest = mf.parse_metadata(meta)
    if not manifest.legacy:
        raise CorruptArchiveError(name, metadata_not_first(first))
    if not files:
        raise CorruptArchiveError(name, "holds no database member")
    return manifest.holding(files)
