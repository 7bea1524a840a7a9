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

import dataclasses
from collections.abc import Collection, Mapping

import structlog

from backup_sidecar import pagestore
from backup_sidecar.archiver import ArchiveInfo, ArchiveStatus
from backup_sidecar.errors import PageStoreError
from backup_sidecar.jobs.pagecheck import forget_verified
from backup_sidecar.jobs.pagestores import store_names, store_path
from backup_sidecar.jobs.pagesummary import store_summary
from backup_sidecar.jobs.runtime import Runtime

log = structlog.get_logger(__name__)


def prune_pages(
    rt: Runtime,
    *,
    keep: Mapping[str, int],
    spare: Collection[str] = (),
    dry_run: bool = False,
) -> tuple[list[ArchiveInfo], list[tuple[ArchiveInfo, str]]]:
    """Apply ``keep`` (policy -> count) to the incremental backups: (deleted, failed).

    Read from the stores' cached summaries (jobs/pagesummary.py), so a prune after every
    backup of a long chain reads no manifest it has read before. A summary stale because a
    store was busy can only lack a backup, never invent the newest: it keeps more, never less.
    """
    if not keep:
        return [], []
    backups = _backups(rt)
    expired = []
    for policy, count in keep.items():
        if count < 0:  # unlimited
            continue
        # A damaged backup is never pruned nor counted, like a damaged archive: it stays (and
        # alarms) until the operator deletes it.
        chain = sorted(
            (b for b in backups if b.policy == policy and b.status is not ArchiveStatus.DAMAGED),
            key=lambda b: b.newness,
        )
        kept = chain[-max(count, 1) :]  # the newest always stays
        expired += [b for b in chain if b not in kept and b.name not in spare]
    deleted: list[ArchiveInfo] = []
    failed: list[tuple[ArchiveInfo, str]] = []
    if dry_run:
        return expired, failed
    stores: set[str] = set()
    for info in expired:
        try:
            for db in info.databases:
                store = store_path(rt.backup_dir, db, create=False)
                if store is not None:
                    pagestore.delete_backup(store, info.name)
                    forget_verified(rt.backup_dir, db, info.name)
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


def _backups(rt: Runtime) -> list[ArchiveInfo]:
    """One entry per incremental backup name, covering every store that holds it."""
    by_name: dict[str, ArchiveInfo] = {}
    for db in store_names(rt.backup_dir):
        for brief in store_summary(rt.backup_dir, db):
            seen = by_name.get(brief.name)
            if seen is None:
                by_name[brief.name] = brief
            else:
                by_name[brief.name] = dataclasses.replace(
                    seen,
                    databases=(*seen.databases, db),
                    size_bytes=seen.size_bytes + brief.size_bytes,
                )
    return list(by_name.values())
