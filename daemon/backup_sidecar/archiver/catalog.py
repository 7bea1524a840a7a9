"""Find and list archives from their metadata member alone, never extracting a database.

Each archive's first gzip member holds only the metadata (for backup-sidecar archives), so
listing decompresses a few kilobytes per archive whatever its size. The seed's own archives
are one gzip member with the metadata anywhere: their tar headers are read (bounded, and
remembered; see archiver.legacy). An archive whose metadata cannot be read is listed as
damaged, with the reason, never skipped.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from backup_sidecar.archiver import manifest as mf
from backup_sidecar.archiver.damage import MARKER_SUFFIX, read_mark
from backup_sidecar.archiver.gzipstream import READ_BUFFER, open_strict
from backup_sidecar.archiver.legacy import (
    SEED_DATABASE_FILES,
    metadata_not_first,
    scan_seed_archive,
)
from backup_sidecar.archiver.model import DEFAULT_LIMITS, ArchiveInfo, ArchiveStatus, Limits
from backup_sidecar.archiver.retention import restore_point_id
from backup_sidecar.archiver.safefs import link_target
from backup_sidecar.archiver.tarstream import TarReader
from backup_sidecar.errors import (
    ArchiveLinkError,
    ArchiveNotFoundError,
    CorruptArchiveError,
    GzipFormatError,
    ManifestError,
    TarFormatError,
)


def archive_name(path: Path) -> str:
    return path.name.removesuffix(mf.ARCHIVE_SUFFIX)


def read_manifest(path: Path, *, limits: Limits = DEFAULT_LIMITS) -> mf.Manifest:
    """The parsed metadata member; CorruptArchiveError if it is missing, misplaced or invalid.

    A backup-sidecar archive's metadata is its first member (anything else is damaged); a seed
    archive's may be anywhere, and its manifest says which databases the archive holds."""
    name = archive_name(path)
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as raw:
            # Read-ahead of one buffer past the metadata is allowed: a seed archive is one member.
            limit = limits.max_metadata_bytes + 4096 + READ_BUFFER
            stream = open_strict(raw, limit=limit, first_member_only=True)
            tar = TarReader(stream)
            first = next(tar.members(), None)
            if first is None:
                raise CorruptArchiveError(name, f"holds no member, not {mf.METADATA_MEMBER}")
            if first.name == mf.METADATA_MEMBER:
                if first.size > limits.max_metadata_bytes:
                    raise CorruptArchiveError(name, f"{mf.METADATA_MEMBER} is {first.size} bytes")
                manifest = mf.parse_metadata(tar.read(first.size))
                if not manifest.legacy:
                    return manifest
            elif first.name not in SEED_DATABASE_FILES:
                raise CorruptArchiveError(name, metadata_not_first(first.name))
            return scan_seed_archive(raw, name=name, limits=limits)
    except (GzipFormatError, TarFormatError, ManifestError) as exc:
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
    bad = [
        f"{db}: {e.integrity_check}"
        for db, e in manifest.databases.items()
        if e.integrity_check != "ok"
    ]
    if not manifest.legacy and bad:
        # A pre_restore archive of a damaged live database, saved as it was found.
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
        error=(
            mark.describe()
            if mark is not None
            else f"holds a damaged database ({'; '.join(bad)})"
            if bad
            else None
        ),
        sequence=manifest.sequence,
        file_id=(st.st_dev, st.st_ino),
        restore_point=restore_point_id(manifest),
        copy_of=manifest.backup_name if manifest.backup_name != archive_name(path) else None,
    )


def list_archives(backup_dir: Path) -> list[ArchiveInfo]:
    """Every ``*.tar.gz`` in ``backup_dir``, newest first (`newest_first`): one
    scan of a throwaway `Catalog` (the CLI's one-shot listing; the daemon keeps its catalog)."""
    return list(Catalog(backup_dir).refresh().archives)


def newest_first(infos: Iterable[ArchiveInfo]) -> list[ArchiveInfo]:
    """The order of every listing: newest first by ``ArchiveInfo.newness`` (creation sequence,
    then metadata time, then name; never the wall clock alone)."""
    return sorted(infos, key=lambda a: a.newness, reverse=True)


#: What identifies one version of an archive file (and of its damage marker) between scans:
#: st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns. A rename, rewrite, truncation or chmod
#: changes it; an untouched file keeps it, so its metadata is not read again.
FileIdentity = tuple[int, int, int, int, int]


def _identity(st: os.stat_result) -> FileIdentity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class CatalogSnapshot:
    """The backup directory as of one scan: every archive newest first. Shared by every reader
    (never copied per request); ``generation`` changes whenever ``archives`` does."""

    generation: int
    archives: tuple[ArchiveInfo, ...]
    #: archives whose metadata the scan that made this snapshot read, and that it dropped
    read: int = 0
    dropped: int = 0


class Catalog:
    """One backup directory's archives, kept in memory and shared by every reader.

    `refresh` is one ``os.scandir`` of the directory, with an ``lstat`` per archive and per
    damage marker (never following a link); only an archive that is new, or whose file or
    marker changed identity (`FileIdentity`), is described again (its metadata member read);
    vanished ones are dropped. An `ArchiveInfo` here keeps no parsed metadata (``manifest`` is
    None: a drill reads the one archive it needs), so thousands of archives with thousands of
    tables each cost a few hundred bytes apiece. Thread-safe: scans are serialised, and a caller
    that waited for a scan begun after its call takes that scan's result; `snapshot` never waits.
    """

    def __init__(
        self, backup_dir: Path, *, describe: Callable[[Path], ArchiveInfo] = describe
    ) -> None:
        self.backup_dir = backup_dir
        self._describe = describe
        self._scan_lock = threading.Lock()
        #: archive file name -> (identity of the file and of its marker, what describe said)
        self._entries: dict[str, tuple[tuple[FileIdentity, FileIdentity | None], ArchiveInfo]]
        self._entries = {}
        self._snapshot = CatalogSnapshot(generation=0, archives=())
        self._scan_started = -1  # monotonic_ns when the last scan began
        #: scans done, and metadata reads (describe calls) done, since the catalog was made
        self.scans = 0
        self.reads = 0

    def snapshot(self) -> CatalogSnapshot:
        """The archives as of the last `refresh` (none before the first), without scanning."""
        return self._snapshot

    def refresh(self) -> CatalogSnapshot:
        """Scan the directory and return the up-to-date snapshot; OSError if it is unreadable
        (the previous snapshot is kept)."""
        asked = time.monotonic_ns()
        with self._scan_lock:
            if self._scan_started > asked:
                # A scan that began after this call did is done: the directory as of now, or
                # newer. Concurrent callers (16 clients listing at once) share one scan.
                return self._snapshot
            self._scan_started = time.monotonic_ns()
            found, markers = self._scan()
            old = self._entries
            entries: dict[str, tuple[tuple[FileIdentity, FileIdentity | None], ArchiveInfo]] = {}
            read = 0
            for name, ident in found.items():
                key = (ident, markers.get(name))
                known = old.get(name)
                if known is not None and known[0] == key:
                    entries[name] = known
                    continue
                try:
                    info = self._describe(self.backup_dir / name)
                except FileNotFoundError:
                    continue  # pruned between scandir and the read
                read += 1
                entries[name] = (key, _lean(info))
            dropped = len(old.keys() - entries.keys())
            self.scans += 1
            self.reads += read
            self._entries = entries
            if read or dropped:
                self._snapshot = CatalogSnapshot(
                    generation=self._snapshot.generation + 1,
                    archives=tuple(newest_first(info for _, info in entries.values())),
                    read=read,
                    dropped=dropped,
                )
            return self._snapshot

    def _scan(self) -> tuple[dict[str, FileIdentity], dict[str, FileIdentity]]:
        """Archive file name -> identity, and archive file name -> its marker's identity."""
        archives: dict[str, FileIdentity] = {}
        markers: dict[str, FileIdentity] = {}
        tail = mf.ARCHIVE_SUFFIX + MARKER_SUFFIX
        with os.scandir(self.backup_dir) as entries:
            for entry in entries:
                name = entry.name
                try:
                    if name.endswith(mf.ARCHIVE_SUFFIX):
                        if entry.is_file(follow_symlinks=False):
                            archives[name] = _identity(entry.stat(follow_symlinks=False))
                    elif name.endswith(tail) and not name.startswith("."):
                        # any type: a planted link or directory is an unreadable marker
                        markers[name[: -len(MARKER_SUFFIX)]] = _identity(
                            entry.stat(follow_symlinks=False)
                        )
                except FileNotFoundError:
                    continue  # gone between readdir and lstat
        return archives, markers


def _lean(info: ArchiveInfo) -> ArchiveInfo:
    """``info`` without its parsed metadata (the raw document and every table's row count):
    what a listing needs is in the other fields."""
    return dataclasses.replace(info, manifest=None) if info.manifest is not None else info


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
