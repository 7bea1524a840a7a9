"""Verifying an incremental backup: rebuild every database's image and check it.

A backup is listed ``verified`` only once its rebuilt images matched: each page against the
SHA-256 its pack records and the whole image against the manifest (the page store's rebuild),
then ``integrity_check`` and the schema hash and row counts the backup recorded. A verify
that passes leaves a marker per database, ``<backup_dir>/pages/.verified/<db>/<NAME>``,
holding the image's SHA-256: a marker whose SHA-256 is not the manifest's (a backup deleted
and made again under that name) does not count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from backup_sidecar import pagestore
from backup_sidecar.archiver import ArchiveInfo, ArchiveStatus
from backup_sidecar.archiver.sqlitefacts import collect_facts, integrity_check
from backup_sidecar.errors import CorruptArchiveError, PageStoreError
from backup_sidecar.jobs.pagedamage import (
    DAMAGED_DIR,
    VERIFIED_DIR,
    damage_reason,
    drop_marker,
    read_marker,
    write_marker,
)
from backup_sidecar.jobs.pagestores import (
    BriefBackup,
    PageBackup,
    list_page_briefs,
    pages_root,
    store_path,
)
from backup_sidecar.jobs.runtime import Runtime

log = structlog.get_logger(__name__)


def rebuild_checked(
    backup_dir: Path,
    backup: PageBackup,
    *,
    into: Path,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, Path]:
    """Every database of ``backup`` rebuilt into ``into`` (a private staging area) under its
    member name, each checked; CorruptArchiveError naming the backup and the fault."""
    if backup.errors:
        db, why = next(iter(backup.errors.items()))
        raise CorruptArchiveError(backup.name, f"database {db!r}: {why}")
    out: dict[str, Path] = {}
    for db, m in backup.manifests.items():
        member = str(m.metadata.get("member") or db)
        target = into / member
        store = store_path(backup_dir, db, create=False)
        if store is None:
            raise CorruptArchiveError(backup.name, f"the page store of {db!r} is gone")
        try:
            pagestore.rebuild(store, backup.name, out=target)
        except (PageStoreError, OSError) as exc:
            raise CorruptArchiveError(backup.name, str(exc)) from None
        result = integrity_check(target, should_stop=should_stop)
        if result != "ok":
            raise CorruptArchiveError(backup.name, f"{member!r} fails integrity_check: {result}")
        facts = collect_facts(target)
        for key in ("schema_sha256", "row_counts"):
            if key in m.metadata and m.metadata[key] != getattr(facts, key):
                raise CorruptArchiveError(backup.name, f"{member!r}: {key} differs from recorded")
        out[db] = target
    return out


def mark_verified(backup_dir: Path, backup: PageBackup) -> None:
    """Record that every database of ``backup`` rebuilt to its recorded image (a damage
    marker of it goes: the rebuild that found the damage is no longer true)."""
    for db, m in backup.manifests.items():
        write_marker(backup_dir, VERIFIED_DIR, db, backup.name, m.image_sha256)
        drop_marker(backup_dir, DAMAGED_DIR, db, backup.name)


def forget_verified(backup_dir: Path, db: str, name: str) -> None:
    """Remove the markers of ``name`` in ``db`` (its backup was deleted)."""
    drop_marker(backup_dir, VERIFIED_DIR, db, name)
    drop_marker(backup_dir, DAMAGED_DIR, db, name)


def is_verified(backup_dir: Path, backup: PageBackup | BriefBackup) -> bool:
    """Whether a verify passed for this very backup (every database's image SHA-256)."""
    for db, m in backup.manifests.items():
        text = read_marker(backup_dir, VERIFIED_DIR, db, backup.name)
        if text is None or text.strip() != m.image_sha256:
            return False
    return bool(backup.manifests) and not backup.errors


def page_backup_info(backup_dir: Path, backup: PageBackup | BriefBackup) -> ArchiveInfo:
    """An incremental backup as `list` shows it beside the archives."""
    damage = damage_reason(backup_dir, backup) if backup.manifests else None
    if not backup.manifests or backup.errors or damage:
        return ArchiveInfo(
            name=backup.name,
            path=pages_root(backup_dir),
            size_bytes=backup.bytes_stored,
            created_at=backup.created_at,
            status=ArchiveStatus.DAMAGED,
            policy=backup.policy,
            databases=backup.databases,
            sequence=backup.sequence,
            error=damage or "; ".join(f"{db}: {why}" for db, why in backup.errors.items()),
            kind="incremental",
        )
    first = next(iter(backup.manifests))
    verified = is_verified(backup_dir, backup)
    return ArchiveInfo(
        name=backup.name,
        path=pages_root(backup_dir) / first / "manifests" / f"{backup.name}.json",
        size_bytes=backup.bytes_stored,
        created_at=backup.created_at,
        status=ArchiveStatus.VERIFIED if verified else ArchiveStatus.UNVERIFIED,
        policy=backup.policy,
        databases=backup.databases,
        sequence=backup.sequence,
        kind="incremental",
        check=str(backup.manifests[first].metadata.get("check", "")) or None,
    )


def with_incremental(rt: Runtime, archives: Sequence[ArchiveInfo]) -> list[ArchiveInfo]:
    """``archives`` and every incremental backup, newest first (by creation sequence); an
    unreadable page store is logged (``page_store_unreadable``), never the listing's end.
    Read from the stores' cached briefs: an unchanged manifest is not parsed again."""
    backups, problems = list_page_briefs(rt.backup_dir)
    for problem in problems:
        log.warning("page_store_unreadable", problem=problem)
    merged = [*archives, *(page_backup_info(rt.backup_dir, b) for b in backups)]
    return sorted(merged, key=lambda a: a.newness, reverse=True)
