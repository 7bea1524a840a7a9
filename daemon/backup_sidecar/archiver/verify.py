"""Prove an archive restores: the whole gzip stream, exact members, checksums, integrity_check.

Members are streamed into files this process creates itself (``O_EXCL``, mode 0600) inside a
staging area, under size limits taken from the metadata and the free space; nothing is ever
extracted by name with ``tarfile``. The staged copies are what a restore then writes from.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import BinaryIO

from backup_sidecar.archiver import manifest as mf
from backup_sidecar.archiver.catalog import archive_name
from backup_sidecar.archiver.gzipstream import StrictGzipReader, open_strict
from backup_sidecar.archiver.hashing import BackgroundSha256
from backup_sidecar.archiver.legacy import SEED_DATABASE_FILES, metadata_not_first, no_metadata
from backup_sidecar.archiver.model import DEFAULT_LIMITS, Limits, ProgressFn
from backup_sidecar.archiver.safefs import link_target
from backup_sidecar.archiver.seedfiles import KNOWN_DATABASE_FILES
from backup_sidecar.archiver.sqlitefacts import has_sqlite_header, integrity_check
from backup_sidecar.archiver.staging import create_exclusive, free_bytes
from backup_sidecar.archiver.tarstream import BLOCK, Member, TarReader
from backup_sidecar.errors import (
    ArchiveLinkError,
    CorruptArchiveError,
    GzipFormatError,
    InsufficientSpaceError,
    ManifestError,
    OperationAbortedError,
    TarFormatError,
)

_CHUNK = 1 << 20
#: Space kept free on the staging filesystem while extracting.
_SPACE_RESERVE = 16 << 20

LEGACY_WARNING = (
    "archive {name!r} was written by the seed's backup_manager.py: it carries no checksums, "
    "so it was verified by integrity_check alone"
)
NOT_HELD_WARNING = (
    "archive {name!r} holds no {file} although its metadata's includes names it (the seed "
    "skipped a database file that did not exist)"
)
_SEED_DATABASES = {file: db for db, file in KNOWN_DATABASE_FILES.items()}


@dataclass(frozen=True)
class VerifiedArchive:
    """An archive that passed verification, with its databases staged for a restore."""

    name: str
    path: Path
    manifest: mf.Manifest
    staged: dict[str, Path]
    warnings: list[str] = field(default_factory=list)


def _open_archive(path: Path) -> BinaryIO:
    """The archive, never through a symbolic link (one swapped in after resolve_archive)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ArchiveLinkError(path, link_target(path)) from None
        raise
    return os.fdopen(fd, "rb")


def verify_archive(
    path: Path,
    *,
    staging: Path,
    integrity: bool = True,
    limits: Limits = DEFAULT_LIMITS,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> VerifiedArchive:
    """Verify ``path`` completely, staging its databases in ``staging``; raise on any fault.

    ``integrity=False`` skips ``integrity_check`` only for format-2 archives whose exact bytes
    were checked by this process moments ago (the pre-restore safety backup): the checksums
    still prove the archive holds those bytes.
    """
    name = archive_name(path)
    report = progress or (lambda stage, done, total: None)
    try:
        with _open_archive(path) as raw:
            fcntl.flock(raw.fileno(), fcntl.LOCK_SH)  # prune skips archives being read
            manifest, staged, digests = _extract(
                raw,
                name=name,
                staging=staging,
                limits=limits,
                progress=report,
                should_stop=should_stop,
            )
    except (GzipFormatError, TarFormatError, ManifestError) as exc:
        raise CorruptArchiveError(name, str(exc)) from None
    except FileNotFoundError:
        raise CorruptArchiveError(name, "archive file disappeared") from None
    warnings = []
    for db, file in manifest.members().items():
        if not has_sqlite_header(staged[db]):
            raise CorruptArchiveError(name, f"member {file!r} is not an SQLite database")
        if not manifest.legacy and digests[db] != manifest.databases[db].sha256:
            raise CorruptArchiveError(name, f"member {file!r}: sha256 mismatch")
    if manifest.legacy:
        warnings.append(LEGACY_WARNING.format(name=name))
        for db, file in manifest.asked().items():
            if db not in staged:
                warnings.append(NOT_HELD_WARNING.format(name=name, file=file))
    if integrity or manifest.legacy:
        for i, (db, file) in enumerate(manifest.members().items()):
            report("check", i, len(staged))
            result = integrity_check(staged[db], should_stop=should_stop)
            if should_stop():
                raise OperationAbortedError(f"verify of {name!r}")
            if result != "ok":
                raise CorruptArchiveError(name, f"member {file!r} fails integrity_check: {result}")
        report("check", len(staged), len(staged))
    return VerifiedArchive(
        name=name, path=path, manifest=manifest, staged=staged, warnings=warnings
    )


def _extract(
    raw: object,
    *,
    name: str,
    staging: Path,
    limits: Limits,
    progress: ProgressFn,
    should_stop: Callable[[], bool],
) -> tuple[mf.Manifest, dict[str, Path], dict[str, str]]:
    stream = open_strict(raw, limit=limits.max_total_bytes)  # type: ignore[arg-type]
    gz: StrictGzipReader = stream.raw  # type: ignore[assignment]
    tar = TarReader(stream)
    members = tar.members()
    first = next(members, None)
    if first is None:
        raise CorruptArchiveError(name, f"holds no member, not {mf.METADATA_MEMBER}")
    stager = _Stager(
        name=name,
        tar=tar,
        staging=staging,
        progress=progress,
        stop=should_stop,
        max_member=limits.max_total_bytes,
    )
    if first.name != mf.METADATA_MEMBER:
        if first.name not in SEED_DATABASE_FILES:
            raise CorruptArchiveError(name, metadata_not_first(first.name))
        # Maybe the seed's: its metadata can come after the databases.
        return _extract_seed(chain([first], members), tar=tar, gz=gz, stager=stager, limits=limits)
    manifest = _read_metadata(name, tar, first, limits)
    if manifest.legacy:
        return _extract_seed(
            members, tar=tar, gz=gz, stager=stager, limits=limits, manifest=manifest
        )
    expected = {file: db for db, file in manifest.members().items()}
    gz.limit = min(gz.limit, _expansion_bound(manifest, gz.bytes_out, staging))
    stager.total = sum(e.size_bytes for e in manifest.databases.values()) or 1
    for member in members:
        db = _expected_db(name, member, expected, manifest, stager.staged)
        stager.stage(db, member)
    tar.finish()
    missing = sorted(set(expected) - {p.name for p in stager.staged.values()})
    if missing:
        raise CorruptArchiveError(name, f"missing member {missing[0]!r}")
    return manifest, stager.staged, stager.digests


def _extract_seed(
    members: Iterator[Member],
    *,
    tar: TarReader,
    gz: StrictGzipReader,
    stager: _Stager,
    limits: Limits,
    manifest: mf.Manifest | None = None,
) -> tuple[mf.Manifest, dict[str, Path], dict[str, str]]:
    """The seed's archives: its metadata and databases in any order, each at most once, no
    other member; what it holds is what was staged."""
    name = stager.name
    first = mf.METADATA_MEMBER if manifest is not None else ""
    gz.limit = min(gz.limit, gz.bytes_out + max(free_bytes(stager.staging) - _SPACE_RESERVE, 0))
    for member in members:
        first = first or member.name
        if member.name == mf.METADATA_MEMBER:
            if manifest is not None:
                raise CorruptArchiveError(name, f"duplicate member {member.name!r}")
            manifest = _read_metadata(name, tar, member, limits)
            if not manifest.legacy:  # backup-sidecar's own format: the metadata comes first
                raise CorruptArchiveError(name, metadata_not_first(first))
        elif member.name not in SEED_DATABASE_FILES:
            raise CorruptArchiveError(name, f"unexpected member {member.name!r}")
        elif member.name in {p.name for p in stager.staged.values()}:
            raise CorruptArchiveError(name, f"duplicate member {member.name!r}")
        else:
            stager.stage(_SEED_DATABASES[member.name], member)
    tar.finish()
    if manifest is None:
        raise CorruptArchiveError(name, no_metadata([p.name for p in stager.staged.values()]))
    if not stager.staged:
        raise CorruptArchiveError(name, "holds no database member")
    return manifest.holding([p.name for p in stager.staged.values()]), stager.staged, {}


def _read_metadata(name: str, tar: TarReader, member: Member, limits: Limits) -> mf.Manifest:
    if member.size > limits.max_metadata_bytes:
        raise CorruptArchiveError(name, f"{mf.METADATA_MEMBER} is too large ({member.size} bytes)")
    return mf.parse_metadata(tar.read(member.size))


@dataclass
class _Stager:
    """Streams members into new files in ``staging``, hashing them and reporting progress."""

    name: str
    tar: TarReader
    staging: Path
    progress: ProgressFn
    stop: Callable[[], bool]
    max_member: int
    total: int = 1
    done: int = 0
    staged: dict[str, Path] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)

    def stage(self, db: str, member: Member) -> None:
        if member.size > self.max_member:  # a hostile size, not a lack of free space
            raise CorruptArchiveError(
                self.name,
                f"member {member.name!r} declares {member.size} bytes, past the limit of "
                f"{self.max_member} bytes",
            )
        _check_space(self.staging, member.size)
        dest = self.staging / member.name
        self.total = max(self.total, self.done + member.size)
        with os.fdopen(create_exclusive(dest), "wb") as out, BackgroundSha256() as digest:
            while chunk := self.tar.read(_CHUNK):
                if self.stop():
                    raise OperationAbortedError(f"verify of {self.name!r}")
                digest.update(chunk)
                out.write(chunk)
                self.done += len(chunk)
                self.progress("extract", self.done, self.total)
        self.staged[db] = dest
        self.digests[db] = digest.hexdigest()


def _expected_db(
    name: str,
    member: Member,
    expected: dict[str, str],
    manifest: mf.Manifest,
    staged: dict[str, Path],
) -> str:
    if member.name not in expected:
        raise CorruptArchiveError(name, f"unexpected member {member.name!r}")
    db = expected[member.name]
    if db in staged:
        raise CorruptArchiveError(name, f"duplicate member {member.name!r}")
    if not manifest.legacy and member.size != manifest.databases[db].size_bytes:
        raise CorruptArchiveError(
            name,
            f"member {member.name!r} is {member.size} bytes, metadata says "
            f"{manifest.databases[db].size_bytes}",
        )
    return db


def _expansion_bound(manifest: mf.Manifest, so_far: int, staging: Path) -> int:
    """The most the rest of the archive may decompress to: what the metadata promises, or,
    for legacy archives without sizes, what the staging filesystem can hold."""
    if manifest.legacy:
        return so_far + max(free_bytes(staging) - _SPACE_RESERVE, 0)
    overhead = (len(manifest.databases) * 3 + 2) * BLOCK + 20 * BLOCK
    return so_far + sum(e.size_bytes for e in manifest.databases.values()) + overhead + 64 * 1024


def _check_space(staging: Path, size: int) -> None:
    free = free_bytes(staging)
    if size + _SPACE_RESERVE > free:
        raise InsufficientSpaceError(
            staging, size + _SPACE_RESERVE, free, "staging an archive member"
        )
