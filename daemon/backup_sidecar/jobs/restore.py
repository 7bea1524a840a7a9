"""The restore job: verify, save, and restore into the live databases."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from backup_sidecar import archiver
from backup_sidecar.errors import ArchiveNotFoundError, BusyError, SidecarError
from backup_sidecar.jobs.backupdir import clean_leftovers
from backup_sidecar.jobs.effort import Effort
from backup_sidecar.jobs.outcomes import Outcomes, RestoreFinished
from backup_sidecar.jobs.pagerestore import restore_page_backup
from backup_sidecar.jobs.pagestores import PageBackup, find_page_backup, pages_root
from backup_sidecar.jobs.prune import prune_after_backup
from backup_sidecar.jobs.runtime import Runtime

log = structlog.get_logger(__name__)


def run_restore(
    rt: Runtime,
    ref: str,
    *,
    names: Sequence[str] | None = None,
    dry_run: bool = False,
    wait: float | None = None,
    effort: Effort | None = None,
    outcomes: Outcomes | None = None,
    catalog: archiver.Catalog | None = None,
) -> archiver.RestoreResult:
    """Verify, save, and restore into the live databases, holding their locks throughout."""
    effort = effort or rt.effort
    effort.lower_priority()
    path, shown, members, backup = restore_source(rt, ref)
    recorded = archiver.read_manifest(path).backup_name if backup is None else None
    clean_leftovers(rt)
    targets = list(names) if names else [n for n in members if n in rt.databases]
    rt.select(targets)
    try:
        with archiver.database_locks(
            rt.backup_dir, targets, wait=wait, should_stop=effort.should_stop
        ):
            if backup is not None:
                result = restore_page_backup(
                    rt, backup, targets=targets, dry_run=dry_run, effort=effort
                )
            else:
                result = archiver.restore_archive(
                    path,
                    databases=rt.databases,
                    selected=targets,
                    backup_dir=rt.backup_dir,
                    now=rt.clock(),
                    dry_run=dry_run,
                    **effort.archiver_keywords(),
                )
                if recorded != shown.removesuffix(archiver.ARCHIVE_SUFFIX):  # a link, copy, rename
                    log.warning("restore_of_a_copy", archive=shown, backup=recorded)
                    result = dataclasses.replace(result, copy_of=recorded)
    except SidecarError as exc:
        log.error("restore_failed", archive=shown, error=str(exc))
        if outcomes and not dry_run:
            outcomes.publish(
                RestoreFinished(
                    archive=shown,
                    finished_at=rt.clock(),
                    error=str(exc),
                    busy=isinstance(exc, BusyError),
                )
            )
        raise
    if not dry_run:
        log.info(
            "restore_completed",
            archive=result.archive,
            restored=list(result.restored),
            pre_restore_archive=result.pre_restore_archive,
            damaged=list(result.damaged),
        )
        if outcomes:
            outcomes.publish(RestoreFinished(archive=result.archive, finished_at=rt.clock()))
        if result.pre_restore_archive:
            prune_after_backup(
                rt,
                policy=archiver.PRE_RESTORE_POLICY,
                just_written=result.pre_restore_archive,
                outcomes=outcomes,
                catalog=catalog,
            )
    return result


def restore_source(rt: Runtime, ref: str) -> tuple[Path, str, Sequence[str], PageBackup | None]:
    """What ``ref`` names: (path, name, databases, the incremental backup or None). An
    archive's name or path first; a name no archive has may be an incremental backup's."""
    try:
        path = archiver.resolve_archive(rt.backup_dir, ref)
    except ArchiveNotFoundError:
        backup = find_page_backup(rt.backup_dir, ref) if "/" not in ref else None
        if backup is None:
            raise
        return pages_root(rt.backup_dir), backup.name, backup.databases, backup
    return path, path.name, list(archiver.read_manifest(path).members()), None


def restore_json(result: archiver.RestoreResult) -> dict[str, Any]:
    """A restore's result as the CLI's --json and the control socket give it."""
    return {
        "archive": result.archive,
        "dry_run": result.dry_run,
        "restored": list(result.restored),
        "pre_restore_archive": result.pre_restore_archive,
        "damaged": list(result.damaged),
        "plan": list(result.plan),
        "copy_of": result.copy_of,
    }
