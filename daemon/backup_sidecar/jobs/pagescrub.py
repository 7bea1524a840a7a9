"""The scrub's and the drill's part for incremental backups: rebuild and check each one."""

from __future__ import annotations

import json
from collections.abc import Callable

import structlog

from backup_sidecar import archiver
from backup_sidecar.errors import CorruptArchiveError
from backup_sidecar.jobs.pagecheck import mark_verified, rebuild_checked
from backup_sidecar.jobs.pagedamage import damage_reason, mark_page_damaged
from backup_sidecar.jobs.pagestores import PageBackup, list_page_backups
from backup_sidecar.jobs.runtime import Runtime

log = structlog.get_logger(__name__)


def recheck_page_backup(
    rt: Runtime, backup: PageBackup, *, found_by: str, should_stop: Callable[[], bool]
) -> str | None:
    """Rebuild every database of ``backup`` in a staging area and check it (pagecheck.py):
    None and marked verified if it passed, else the fault, the backup marked damaged."""
    try:
        with archiver.staging_area(rt.backup_dir, purpose="verify") as area:
            rebuild_checked(rt.backup_dir, backup, into=area, should_stop=should_stop)
    except CorruptArchiveError as exc:
        fault = f"{found_by}: {exc.fault}"
        mark_page_damaged(rt.backup_dir, backup, fault, found_by=found_by)
        return fault
    mark_verified(rt.backup_dir, backup)
    return None


def scrub_pages(
    rt: Runtime,
    *,
    should_stop: Callable[[], bool],
    passed: list[str],
    damaged: list[tuple[str, str]],
    skipped: list[str],
) -> None:
    """Every incremental backup rebuilt and checked; one already damaged (unreadable manifest,
    missing database, or marked) is skipped; an unreadable page store is logged. A backup
    whose pages, image and facts equal those of one that passed earlier in this scrub
    (``same_result``) passes without a second rebuild."""
    backups, problems = list_page_backups(rt.backup_dir)
    for problem in problems:
        log.warning("page_store_unreadable", problem=problem)
    checked: set[tuple[object, ...]] = set()
    for backup in backups:
        if backup.errors or not backup.manifests or damage_reason(rt.backup_dir, backup):
            skipped.append(backup.name)
            continue
        key = same_result(backup)
        if key in checked:  # this very check already passed in this scrub
            mark_verified(rt.backup_dir, backup)
            passed.append(backup.name)
            continue
        fault = recheck_page_backup(rt, backup, found_by="scrub", should_stop=should_stop)
        if fault is None:
            passed.append(backup.name)
            checked.add(key)
        else:
            damaged.append((backup.name, fault))


def same_result(backup: PageBackup) -> tuple[object, ...]:
    """What a rebuild-and-check of ``backup`` reads and compares, per database: the pages
    (the runs: the same slots of the same immutable packs), the image's SHA-256 and the
    recorded facts it is checked against. Two backups with equal keys get the same result
    from the same packs, so a scrub rebuilds one of them (the unchanged backups of a quiet
    database every minute are thousands of equal keys)."""
    return tuple(
        sorted(
            (
                db,
                m.page_size,
                m.image_sha256,
                m.runs,
                json.dumps(
                    {k: m.metadata[k] for k in ("schema_sha256", "row_counts") if k in m.metadata},
                    sort_keys=True,
                    default=str,
                ),
            )
            for db, m in backup.manifests.items()
        )
    )
