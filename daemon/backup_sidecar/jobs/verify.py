"""The verify job: one archive read and checked completely."""

from __future__ import annotations

from typing import Any

import structlog

from backup_sidecar import archiver
from backup_sidecar.errors import ArchiveNotFoundError
from backup_sidecar.jobs.backupdir import refuse_unsafe_entries
from backup_sidecar.jobs.effort import Effort
from backup_sidecar.jobs.pagecheck import mark_verified, rebuild_checked
from backup_sidecar.jobs.pagestores import PageBackup, find_page_backup, pages_root
from backup_sidecar.jobs.runtime import Runtime

log = structlog.get_logger(__name__)

COPY_WARNING = (
    "archive {name!r} holds backup {backup!r} (its metadata names it): a copy, link or rename of "
    "that backup's archive, whose data it restores; it is not uploaded offsite under this name"
)


def run_verify(
    rt: Runtime,
    ref: str,
    *,
    effort: Effort | None = None,
) -> dict[str, Any]:
    """Verify one archive completely; returns a summary, raises CorruptArchiveError on a fault."""
    effort = effort or rt.effort
    effort.lower_priority()
    try:
        path = archiver.resolve_archive(rt.backup_dir, ref)
    except ArchiveNotFoundError:
        backup = find_page_backup(rt.backup_dir, ref) if "/" not in ref else None
        if backup is None:
            raise
        return verify_page_backup(rt, backup, effort=effort)
    refuse_unsafe_entries(rt)
    with archiver.staging_area(rt.backup_dir, purpose="verify") as area:
        verified = archiver.verify_archive(
            path, staging=area, progress=effort.progress, should_stop=effort.should_stop
        )
    recorded = verified.manifest.backup_name
    if recorded != verified.name:
        verified.warnings.append(COPY_WARNING.format(name=verified.name, backup=recorded))
    for warning in verified.warnings:
        log.warning("verify_warning", archive=verified.name, warning=warning)
    log.info("archive_verified", archive=verified.name)
    return {
        "archive": verified.name,
        "path": str(path),
        "ok": True,
        "legacy": verified.manifest.legacy,
        "databases": list(verified.manifest.members()),
        "warnings": verified.warnings,
    }


def verify_page_backup(rt: Runtime, backup: PageBackup, *, effort: Effort) -> dict[str, Any]:
    """Rebuild every database of an incremental backup into a staging area and check it
    (jobs/pagecheck.py); a pass marks it verified. CorruptArchiveError on a fault."""
    refuse_unsafe_entries(rt)
    with archiver.staging_area(rt.backup_dir, purpose="verify") as area:
        rebuild_checked(rt.backup_dir, backup, into=area, should_stop=effort.should_stop)
    mark_verified(rt.backup_dir, backup)
    log.info("archive_verified", archive=backup.name, kind="incremental")
    return {
        "archive": backup.name,
        "path": str(pages_root(rt.backup_dir)),
        "ok": True,
        "legacy": False,
        "databases": list(backup.databases),
        "warnings": [],
        "kind": "incremental",
    }
