"""What every job reads from and does to the backup directory: its listing, an archive as
JSON, the refusal of planted entries, leftovers of crashed operations, damage markers."""

from __future__ import annotations

from typing import Any

import structlog

from backup_sidecar import archiver
from backup_sidecar.archiver import ArchiveInfo
from backup_sidecar.errors import UnsafeEntryError
from backup_sidecar.jobs.runtime import Runtime

log = structlog.get_logger(__name__)


def archive_json(a: ArchiveInfo) -> dict[str, Any]:
    """One archive as both `list --json` and the socket's `list` show it."""
    return {
        "name": a.name,
        "path": str(a.path),
        "created_at": a.created_at.isoformat(),
        "size_bytes": a.size_bytes,
        "databases": list(a.databases),
        "policy": a.policy,
        "status": a.status.value,
        "verified": a.status is archiver.ArchiveStatus.VERIFIED,
        "error": a.error,
        "sequence": a.sequence,
        "kind": a.kind,
        "check": a.check or ("full" if a.kind == "archive" else None),
        "copy_of": a.copy_of,
    }


def listing(rt: Runtime, catalog: archiver.Catalog | None) -> list[ArchiveInfo]:
    """The backup directory's archives, newest first: from the daemon's catalog, rescanned now
    (only new or changed archives are read), or for the CLI, one listing of the directory."""
    if catalog is None:
        return archiver.list_archives(rt.backup_dir)
    return list(catalog.refresh().archives)


def refuse_unsafe_entries(rt: Runtime) -> None:
    """UnsafeEntryError naming the first planted link or foreign file among the backup
    directory's own entries; a missing or unreadable directory is left for the operation
    itself to report."""
    try:
        archiver.check_backup_dir(rt.backup_dir)
    except UnsafeEntryError:
        raise
    except OSError:
        pass


def clean_leftovers(rt: Runtime) -> None:
    """Remove what crashed operations left behind (only what no live process holds).

    Best effort: a directory this process cannot read is left for the operation itself to
    report, with the error that names it. A planted link or foreign file among the backup
    directory's own entries is refused first (UnsafeEntryError), before anything is removed.
    """
    refuse_unsafe_entries(rt)
    try:
        removed = archiver.clean_leftovers(rt.backup_dir) if rt.backup_dir.is_dir() else []
        removed += archiver.clean_restore_leftovers(list(rt.databases.values()))
    except OSError as exc:
        log.warning("leftover_cleanup_failed", error=str(exc))
        return
    for path in removed:
        log.warning("leftover_removed", path=str(path))
    for path in archiver.rescued_content(rt.backup_dir):
        log.error(
            "pre_restore_content_kept",
            path=str(path),
            reason="a restore could not archive the content it replaced; move it out by hand",
        )


def mark_damaged(rt: Runtime, archive: ArchiveInfo, fault: str, *, found_by: str) -> None:
    """Write the archive's damage marker and log it; a marker that cannot be written is logged
    (the archive is still treated as damaged by the operation that found it)."""
    try:
        archiver.mark_damaged(archive.path, reason=fault, found_by=found_by, now=rt.clock())
    except OSError as exc:
        log.error("damage_marker_failed", archive=archive.name, error=exc.strerror or str(exc))
    log.error(
        "archive_damaged",
        archive=archive.name,
        policy=archive.policy,
        reason=fault,
        found_by=found_by,
    )
