"""Find and list archives from their metadata member alone, never extracting a database.

Each archive's first gzip member holds only the metadata (for backup-sidecar archives), so
listing decompresses a few kilobytes per archive whatever its size. An archive whose metadata
cannot be read is listed as damaged, with the reason, never skipped.
"""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

from backup_sidecar.archiver import manifest as mf
from backup_sidecar.archiver.damage import read_mark
from backup_sidecar.archiver.gzipstream import READ_BUFFER, GzipFormatError, open_strict
from backup_sidecar.archiver.model import DEFAULT_LIMITS, ArchiveInfo, ArchiveStatus, Limits
from backup_sidecar.archiver.safefs import link_target
from backup_sidecar.archiver.tarstream import TarFormatError, TarReader
from backup_sidecar.errors import ArchiveLinkError, ArchiveNotFoundError, CorruptArchiveError


def archive_name(path: Path) -> str:
    return path.name.removesuffix(mf.ARCHIVE_SUFFIX)


def read_manifest(path: Path, *, limits: Limits = DEFAULT_LIMITS) -> mf.Manifest:
    """The parsed metadata member; CorruptArchiveError if it is missing, not first, or invalid."""
    name = archive_name(path)
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as raw:
            # Read-ahead of one buffer past the metadata is allowed: a seed archive is one member.
            limit = limits.max_metadata_bytes + 4096 + READ_BUFFER
            stream = open_strict(raw, limit=limit, first_member_only=True)
            tar = TarReader(stream)
            first = next(tar.members(), None)
            if first is None or first.name != mf.METADATA_MEMBER:
                found = "no member" if first is None else f"{first.name!r}"
                raise CorruptArchiveError(
                    name, f"first member is {found}, not {mf.METADATA_MEMBER}"
                )
            if first.size > limits.max_metadata_bytes:
                raise CorruptArchiveError(name, f"{mf.METADATA_MEMBER} is {first.size} bytes")
            return mf.parse_metadata(tar.read(first.size))
    except (GzipFormatError, TarFormatError, mf.ManifestError) as exc:
        raise CorruptArchiveError(name, str(exc)) from None
    except OSError as exc:
        raise CorruptArchiveError(name, f"cannot be read: {exc.strerror or exc}") from None


def describe(path: Path) -> ArchiveInfo:
    """One archive as `list` shows it; damaged archives carry their error instead of metadata."""
    st = path.lstat()
    try:
        manifest = read_manifest(path)
    except CorruptArchiveError as exc:
        return ArchiveInfo(
            name=archive_name(path),
            path=path,
            size_bytes=st.st_size,
            created_at=_mtime(st.st_mtime),
            status=ArchiveStatus.DAMAGED,
            policy=_policy_from_name(archive_name(path)),
            error=exc.fault,
        )
    status = ArchiveStatus.LEGACY if manifest.legacy else ArchiveStatus.VERIFIED
    if not manifest.legacy and any(e.integrity_check != "ok" for e in manifest.databases.values()):
        status = ArchiveStatus.DAMAGED
    mark = read_mark(path, st)  # a failed read check, scrub or drill: rot the metadata hides
    if mark is not None:
        status = ArchiveStatus.DAMAGED
    return ArchiveInfo(
        name=archive_name(path),
        path=path,
        size_bytes=st.st_size,
        created_at=manifest.created_at,
        status=status,
        policy=manifest.policy,
        databases=tuple(manifest.members()),
        manifest=manifest,
        error=mark.describe() if mark is not None else None,
    )


def list_archives(backup_dir: Path) -> list[ArchiveInfo]:
    """Every ``*.tar.gz`` in ``backup_dir``, newest first (by metadata time, then name)."""
    infos = []
    with os.scandir(backup_dir) as entries:
        for entry in entries:
            if entry.name.endswith(mf.ARCHIVE_SUFFIX) and entry.is_file(follow_symlinks=False):
                try:
                    infos.append(describe(Path(entry.path)))
                except FileNotFoundError:
                    continue  # pruned between scandir and stat
    infos.sort(key=lambda a: (a.created_at, a.name), reverse=True)
    return infos


def resolve_archive(backup_dir: Path, ref: str) -> Path:
    """An archive given as a name, ``name.tar.gz``, or a path to an existing file.

    The archive itself is never reached through a symbolic link (ArchiveLinkError): a link
    named like an archive could make a verify or restore read /etc/shadow or a live database.
    """
    if "/" in ref:
        path, shown = Path(ref), ref
    else:
        name = ref.removesuffix(mf.ARCHIVE_SUFFIX)
        mf.validate_name(name)
        path, shown = backup_dir / f"{name}{mf.ARCHIVE_SUFFIX}", name
    try:
        st = path.lstat()
    except OSError:
        raise ArchiveNotFoundError(shown) from None
    if stat.S_ISLNK(st.st_mode):
        raise ArchiveLinkError(path, link_target(path))
    if not stat.S_ISREG(st.st_mode):
        raise ArchiveNotFoundError(shown)
    return path


def _mtime(seconds: float) -> datetime:
    """A file's modification time in UTC, clamped to what datetime holds (tmpfs keeps any
    64-bit time ``touch -d`` sets)."""
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return (datetime.max if seconds > 0 else datetime.min).replace(tzinfo=UTC)


def _policy_from_name(name: str) -> str:
    """Best guess of a damaged archive's policy from the default naming ``<policy>_<time>``."""
    head, sep, _ = name.partition("_")
    return head if sep else "manual"
