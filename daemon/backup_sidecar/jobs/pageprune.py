"""Retention of incremental policies through the page store, never breaking a chain.

A policy keeps its ``keep`` newest incremental backups (by creation sequence, never the
clock), and never the newest one nor one it was told to spare (the backup just written):
with ``keep: 0`` the newest still stays, as the newest verified archive of a policy does.
An expired backup's manifests are deleted (one unlink each), then each store's garbage is
collected: a pack that any kept backup needs, directly or as the base of a delta it uses,
stays (pagestore.gc), so deleting a chain's base or middle leaves every later backup
restorable. A kill at any point is the library's to survive (tests/pagestore/test_kill.py).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import structlog

from backup_sidecar import pagestore
from backup_sidecar.archiver import ArchiveInfo
from backup_sidecar.errors import PageStoreError
from backup_sidecar.jobs.pagecheck import forget_verified, page_backup_info
from backup_sidecar.jobs.pagestores import chain_of, list_page_backups, store_path
from backup_sidecar.jobs.runtime import Runtime

log = structlog.get_logger(__name__)


def prune_pages(
    rt: Runtime,
    *,
    keep: Mapping[str, int],
    spare: Collection[str] = (),
    dry_run: bool = False,
) -> tuple[list[ArchiveInfo], list[tuple[ArchiveInfo, str]]]:
    """Apply ``keep`` (policy -> count) to the incremental backups: (deleted, failed)."""
    backups, _ = list_page_backups(rt.backup_dir)
    expired = []
    for policy, count in keep.items():
        if count < 0:  # unlimited
            continue
        chain = [b for b in chain_of(backups, policy=policy) if not b.errors]
        kept = chain[-max(count, 1) :]  # the newest always stays
        expired += [b for b in chain if b not in kept and b.name not in spare]
    deleted: list[ArchiveInfo] = []
    failed: list[tuple[ArchiveInfo, str]] = []
    if dry_run:
        return [page_backup_info(rt.backup_dir, b) for b in expired], failed
    stores: set[str] = set()
    for b in expired:
        info = page_backup_info(rt.backup_dir, b)
        try:
            for db in b.manifests:
                store = store_path(rt.backup_dir, db, create=False)
                if store is not None:
                    pagestore.delete_backup(store, b.name)
                    forget_verified(rt.backup_dir, db, b.name)
                    stores.add(db)
        except (PageStoreError, OSError) as exc:
            failed.append((info, str(exc)))
            continue
        deleted.append(info)  # logged (archive_pruned) and counted with the archives
    for db in sorted(stores):
        store = store_path(rt.backup_dir, db, create=False)
        try:
            report = pagestore.collect_garbage(store) if store else None
        except (PageStoreError, OSError) as exc:  # the next prune collects again
            log.error("page_gc_failed", database=db, error=str(exc))
            continue
        if report:
            log.info(
                "page_gc_completed",
                database=db,
                packs_deleted=len(report.packs_deleted),
                bytes_freed=report.bytes_freed,
                packs_kept=report.packs_kept,
            )
    return deleted, failed
