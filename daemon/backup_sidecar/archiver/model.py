"""Frozen value objects shared by every archiver step."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from backup_sidecar.archiver.manifest import Manifest
from backup_sidecar.archiver.seedfiles import KNOWN_DATABASE_FILES


@dataclass(frozen=True)
class DatabaseSpec:
    """A database the sidecar protects: its name, live path and member name in archives."""

    name: str
    path: Path
    member: str = ""

    def __post_init__(self) -> None:
        if not self.member:
            object.__setattr__(self, "member", default_member(self.name, self.path))


def default_member(name: str, path: Path) -> str:
    """The member name of a database: the seed's file name for arrow/user, else the file's."""
    return KNOWN_DATABASE_FILES.get(name, path.name)


class ArchiveStatus(enum.StrEnum):
    """How far an archive can be trusted, as `list` reports it."""

    VERIFIED = "verified"  # written by backup-sidecar after integrity_check and hashing
    LEGACY = "legacy"  # written by the seed's backup_manager.py: no checksums
    #: metadata unreadable, or marked by a failed read check, scrub or restore drill
    #: (``<name>.tar.gz.damaged``): never trusted, never pruned, never counted as a good copy
    DAMAGED = "damaged"
    #: an incremental backup (the page store) whose rebuilt image no verify has checked yet
    UNVERIFIED = "unverified"


@dataclass(frozen=True)
class ArchiveInfo:
    """One archive as `list` sees it, from its metadata member alone."""

    name: str
    path: Path
    size_bytes: int
    created_at: datetime
    status: ArchiveStatus
    policy: str
    databases: tuple[str, ...] = ()
    manifest: Manifest | None = None
    error: str | None = None
    #: The backup directory's creation sequence (see archiver/sequence.py); None for the seed's
    #: archives, those of versions before it, and damaged ones.
    sequence: int | None = None
    #: (st_dev, st_ino) of the file: hard links of one archive are one restore point.
    file_id: tuple[int, int] | None = None
    #: What makes two files one restore point (backup name, sequence, time and every database's
    #: SHA-256 in the metadata, hashed; see retention.restore_point_id): a byte copy of an
    #: archive is not another backup. None where the metadata records no checksums.
    restore_point: str | None = None
    #: The name the metadata records when the file is named otherwise (a link, copy or
    #: rename of the archive written under that name); None when they agree.
    copy_of: str | None = None
    #: ``archive`` (a .tar.gz) or ``incremental`` (a backup in the page store, jobs/).
    kind: str = "archive"
    #: The check an incremental backup ran (``full`` or ``quick``); archives run full.
    check: str | None = None

    @property
    def newness(self) -> tuple[bool, int, datetime, str]:
        """The order of archives, newest last: by creation sequence, which the wall clock cannot
        fool; archives without one below every sequenced one, by their time, then name."""
        return (self.sequence is not None, self.sequence or 0, self.created_at, self.name)


#: progress(stage, done, total): stage is a short word ("snapshot", "pack", "verify", ...).
ProgressFn = Callable[[str, int, int], None]


def no_progress(stage: str, done: int, total: int) -> None:
    """The default progress sink."""


#: The largest ``backup_metadata.json`` a backup writes and verify/list/restore read. One
#: constant for the writer and the reader: a backup whose metadata would be larger (a database
#: with about 100,000 tables: each table's row count is recorded twice, in ``tables`` and
#: ``row_counts``) is refused before anything is published.
MAX_METADATA_BYTES = 16 << 20
#: Upper bound of everything one archive may expand to (the free space check also applies);
#: a backup whose databases would not fit is refused.
MAX_TOTAL_BYTES = 1 << 40


@dataclass(frozen=True)
class Limits:
    """Bounds that keep a hostile archive from exhausting disk, memory or time. The writer
    (create_backup) and the readers (verify, list, restore) use the same ones."""

    max_metadata_bytes: int = MAX_METADATA_BYTES
    max_total_bytes: int = MAX_TOTAL_BYTES
    #: Listing a seed archive reads its tar headers to find the metadata and the databases it
    #: holds (its members come in any order): it decompresses at most the larger of these many
    #: bytes and ``legacy_scan_ratio`` times the archive's size before calling it damaged.
    legacy_scan_bytes: int = 1 << 30
    legacy_scan_ratio: int = 64


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class RestoreResult:
    """What a restore did (or, with dry_run, would do)."""

    archive: str
    restored: tuple[str, ...]
    pre_restore_archive: str | None
    dry_run: bool
    plan: tuple[str, ...] = field(default=())
    #: "name: reason" for each live database saved although damaged (dry run: would be).
    damaged: tuple[str, ...] = field(default=())
    #: The backup the archive's metadata names when that is not the file's name (a link, copy
    #: or rename of that backup's archive: its data is what was restored).
    copy_of: str | None = None
