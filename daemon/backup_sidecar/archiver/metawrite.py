"""A new archive's metadata: what it records of each database, and its member written in place.

The metadata member must come first in the archive but depends on the check and the digests,
so the archive is one multi-member gzip file, ``gzip(metadata) + gzip(databases)``, written in
place: the database members go straight into the archive file behind a gap sized for the
largest metadata these databases can have (``metadata_room``), and the metadata member is
written into the gap at the end (``write_metadata``), made exactly that long by the spaces of
its gzip header's comment field.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from backup_sidecar.archiver import manifest as mf
from backup_sidecar.archiver.gzipstream import compress_member_exact, member_bound
from backup_sidecar.archiver.model import Limits
from backup_sidecar.archiver.packing import Checked
from backup_sidecar.archiver.snapshot import Snapshot
from backup_sidecar.archiver.sqlitefacts import (
    DatabaseFacts,
    header_page_size,
    one_line,
    user_tables,
)
from backup_sidecar.archiver.staging import create_exclusive
from backup_sidecar.archiver.tarstream import member_header, padding
from backup_sidecar.errors import ArchiveTooLargeError, IntegrityCheckError


def database_entries(
    snaps: Sequence[Snapshot],
    checked: Sequence[Checked],
    digests: Sequence[str],
    *,
    keep_damaged: bool = False,
) -> dict[str, mf.DatabaseEntry]:
    """Each database's metadata entry; IntegrityCheckError for a copy that failed the check,
    unless ``keep_damaged`` (a pre-restore copy is archived all the same, marked damaged)."""
    entries = {}
    for snap, check, digest in zip(snaps, checked, digests, strict=True):
        if keep_damaged and (check.result != "ok" or check.facts is None):
            entries[snap.spec.name] = _damaged_entry(snap, check.result, digest)
            continue
        if check.result != "ok":
            raise IntegrityCheckError(snap.spec.name, snap.spec.path, check.result)
        if check.facts is None:
            raise IntegrityCheckError(snap.spec.name, snap.spec.path, "schema unreadable")
        entries[snap.spec.name] = _entry(snap, check.facts, digest)
    return entries


def _damaged_entry(snap: Snapshot, result: str, digest: str) -> mf.DatabaseEntry:
    """A copy archived as it is although it fails integrity_check (a pre-restore copy)."""
    size = snap.staged.stat().st_size
    page_size = header_page_size(snap.staged) or 4096
    return mf.DatabaseEntry(
        file=snap.spec.member,
        source_path=str(snap.spec.path),
        size_bytes=size,
        sha256=digest,
        page_size=page_size,
        page_count=size // page_size,
        journal_mode=snap.source_journal_mode,
        user_version=0,
        schema_sha256="",
        table_count=0,
        row_counts={},
        integrity_check=one_line(result) or "failed",
        sqlite_version=snap.sqlite_version,
        snapshot_seconds=0.0,
    )


def _entry(snap: Snapshot, facts: DatabaseFacts, digest: str) -> mf.DatabaseEntry:
    return mf.DatabaseEntry(
        file=snap.spec.member,
        source_path=str(snap.spec.path),
        size_bytes=snap.staged.stat().st_size,
        sha256=digest,
        page_size=facts.page_size,
        page_count=facts.page_count,
        journal_mode=snap.source_journal_mode,
        user_version=facts.user_version,
        schema_sha256=facts.schema_sha256,
        table_count=facts.table_count,
        row_counts=facts.row_counts,
        integrity_check="ok",
        sqlite_version=snap.sqlite_version,
        snapshot_seconds=round(snap.copy_s, 3),
    )


def check_metadata(name: str, doc: dict[str, object], limits: Limits) -> None:
    """Refuse metadata that verify, list and restore would refuse as too large."""
    size = len(mf.encode_metadata(doc))
    if size > limits.max_metadata_bytes:
        raise ArchiveTooLargeError(name, f"{mf.METADATA_MEMBER}", size, limits.max_metadata_bytes)


def metadata_room(name: str, policy: str, now: datetime, snaps: Sequence[Snapshot]) -> int:
    """The most bytes the metadata member of these staged copies can take once compressed: its
    size with every number at its longest (row counts included, which are not counted yet)."""
    entries = {}
    for snap in snaps:
        try:
            tables = user_tables(snap.staged)
        except sqlite3.DatabaseError:
            tables = []  # too damaged to read: the check refuses it, any room will do
        widest = DatabaseFacts(
            page_size=-(2**63),
            page_count=-(2**63),
            user_version=-(2**31),
            schema_sha256="0" * 64,
            table_count=len(tables),
            row_counts=dict.fromkeys(tables, -(2**63)),
        )
        entries[snap.spec.name] = _entry(snap, widest, "0" * 64)
    doc = mf.build_metadata(
        name=name,
        created_at=now,
        policy=policy,
        databases=entries,
        duration_s=-1e15,
        sequence=mf.MAX_SEQUENCE,
    )
    return member_bound(len(_metadata_member(doc, now)))


def _metadata_member(doc: dict[str, object], now: datetime) -> bytes:
    meta = mf.encode_metadata(doc)
    head = member_header(mf.METADATA_MEMBER, size=len(meta), mtime=int(now.timestamp()))
    return head + meta + padding(len(meta))


def write_metadata(
    tmp: Path, doc: dict[str, object], *, room: int, level: int, now: datetime
) -> Path:
    """Write the metadata member into the room left for it at the start of ``tmp`` and make the
    archive durable. Should it not fit after all, the archive is rewritten into a new file with
    a room of the right size (a copy of the compressed databases, never a wrong archive)."""
    member = _metadata_member(doc, now)
    try:
        head = compress_member_exact(member, level=level, size=room)
    except ValueError:
        return relocate(tmp, member, room=room, level=level)
    fd = os.open(tmp, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.pwrite(fd, head, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def relocate(tmp: Path, member: bytes, *, room: int, level: int) -> Path:
    """Rewrite ``tmp`` into a new file whose metadata member is ``member`` at its full size."""
    moved = tmp.with_name(f"{tmp.name}.2")
    head = compress_member_exact(member, level=level, size=member_bound(len(member)))
    with os.fdopen(create_exclusive(moved), "wb") as out, tmp.open("rb") as src:
        out.write(head)
        out.flush()
        offset = room  # the compressed databases start right after the room left for metadata
        remaining = os.fstat(src.fileno()).st_size - offset
        while remaining:
            sent = os.copy_file_range(src.fileno(), out.fileno(), remaining, offset)
            if sent == 0:
                raise OSError(f"short copy while writing {moved.name}")
            offset += sent
            remaining -= sent
        os.fsync(out.fileno())
    tmp.unlink()
    return moved
