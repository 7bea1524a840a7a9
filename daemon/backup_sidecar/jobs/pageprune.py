"""Retention of incremental policies through the page store, never breaking a chain.

A policy's incremental backups are restore points judged by the same rules as its archives
(``archiver.select``: ``keep``/``keep_last`` and the GFS buckets of gfs.py, read in the
configured zone, newest by creation sequence, never by the clock; the newest verified backup
is never expired). On top of that the newest backup that is not marked damaged always stays
(``newest``: with ``keep: 0`` too; its check passed in its read transaction, and the next
backup builds its deltas on it), and so does one it was told to spare (the backup just
written). A damaged backup is never pruned nor counted. An expired backup's manifests are
deleted (one unlink each), then each store's garbage is collected (a store whose GC a killed
or failed prune still owes is collected by the next prune, even one that deletes nothing:
``pages/.gc/<db>/due``, written before the first manifest goes, removed after its GC): a
pack that any kept backup needs, directly or as the base of a delta it uses, stays
(pagestore.gc), so deleting a chain's base or middle leaves every later backup restorable;
then the packs less than half live are repacked (pagestore/repack.py: their live pages
copied into new packs, the manifests naming them rewritten, the old packs deleted) once the
bytes the deleted backups stored reach a tenth of the store's (pagestore/repackdue.py).
A kill at any point leaves every kept backup restorable (tests/pagestore/test_kill.py,
tests/incremental/test_incremental_gfs.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo

import structlog

from backup_sidecar import archiver, pagestore
from backup_sidecar.archiver import ArchiveInfo, ArchiveStatus
from backup_sidecar.errors import PageBackupNotFoundError, PageStoreError
from backup_sidecar.jobs.pagecheck import forget_verified
from backup_sidecar.jobs.pagedamage import VERIFIED_DIR, drop_marker, marked_names, write_marker
from backup_sidecar.jobs.pagestores import (
    cache_problem,
    find_page_backup,
    store_names,
    store_path,
)
from backup_sidecar.jobs.pagesummary import page_backups
from backup_sidecar.jobs.runtime import Runtime
from backup_sidecar.pagestore.briefs import CACHE as BRIEFS
from backup_sidecar.pagestore.fsio import LOCK_TIMEOUT_S
from backup_sidecar.pagestore.repack import REPACK_BELOW
from backup_sidecar.pagestore.repackdue import REPACK_WHEN

log = structlog.get_logger(__name__)

#: Why the newest backup of a policy stays when no rule keeps it.
NEWEST = "newest"
JUST_WRITTEN = "just written"
#: ``pages/.gc/<db>/due``: that store's manifests were deleted and its GC has not finished.
GC_DIR = ".gc"
GC_DUE = "due"
#: ``pages/.deleting/<db>/<name>``: a prune is deleting backup ``name``; written for every
#: database before the first of its manifests goes, each dropped once that one is gone.
DELETING_DIR = ".deleting"


@dataclass(frozen=True)
class PagePruneResult:
    """Backups deleted (with ``dry_run``: that would be), failed (why), and kept (why)."""

    deleted: list[ArchiveInfo] = field(default_factory=list)
    failed: list[tuple[ArchiveInfo, str]] = field(default_factory=list)
    kept: list[tuple[ArchiveInfo, tuple[str, ...]]] = field(default_factory=list)
    #: Stores whose GC failed (database, why): logged ``page_gc_failed``, owed to the next prune.
    gc_failed: list[tuple[str, str]] = field(default_factory=list)


def select_pages(
    backups: Sequence[ArchiveInfo],
    *,
    rules: Mapping[str, archiver.KeepRules],
    spare: Collection[str] = (),
    tz: tzinfo = UTC,
) -> archiver.Selection:
    """Pure: which of ``backups`` (incremental, one entry per name) the policies in ``rules``
    expire, and why each other one stays (module docstring)."""
    chosen = archiver.select(backups, rules=rules, tz=tz)
    newest: dict[str, ArchiveInfo] = {}
    for b in backups:
        if b.policy not in rules or b.status is ArchiveStatus.DAMAGED:
            continue
        if b.policy not in newest or b.newness > newest[b.policy].newness:
            newest[b.policy] = b
    expired: list[ArchiveInfo] = []
    kept = list(chosen.kept)
    for b in chosen.expired:
        if b.name in spare:
            kept.append((b, (JUST_WRITTEN,)))
        elif newest.get(b.policy) is b:
            kept.append((b, (NEWEST,)))
        else:
            expired.append(b)
    return archiver.Selection(expired=expired, kept=kept)


def prune_pages(
    rt: Runtime,
    *,
    rules: Mapping[str, archiver.KeepRules],
    spare: Collection[str] = (),
    dry_run: bool = False,
) -> PagePruneResult:
    """Apply ``rules`` (policy -> its retention) to the incremental backups.

    Read from the stores' cached summaries (jobs/pagesummary.py), so a prune after every
    backup of a long chain reads no manifest it has read before. A summary stale because a
    store was busy can only lack a backup, never invent the newest: it keeps more, never less.
    """
    if not rules:
        return PagePruneResult()
    stores = _owed(rt)
    finished = [] if dry_run else _finish_deletions(rt, stores)
    chosen = select_pages(_backups(rt), rules=rules, spare=spare, tz=rt.timezone)
    if dry_run:
        return PagePruneResult(deleted=chosen.expired, kept=chosen.kept)
    result = PagePruneResult(kept=chosen.kept, gc_failed=finished)
    disagree = _not_as_listed(rt, chosen.expired)
    if disagree:  # the selection stands on a cache the manifests contradict: nothing goes
        result.failed.extend(disagree)
        chosen = archiver.Selection(expired=[], kept=chosen.kept)
    for info in chosen.expired:
        try:
            dbs = [db for db in info.databases if store_path(rt.backup_dir, db, create=False)]
            for db in dbs:  # before any manifest goes: a kill leaves every store owed and
                # the backup's other manifests to delete (``pages/.deleting/<db>/<name>``)
                write_marker(rt.backup_dir, DELETING_DIR, db, info.name, "")
                if db not in stores:
                    write_marker(rt.backup_dir, GC_DIR, db, GC_DUE, "")
                    stores.add(db)
            for db in dbs:
                _delete(rt, db, info.name)
        except (PageStoreError, OSError) as exc:
            result.failed.append((info, str(exc)))
            continue
        result.deleted.append(info)  # logged (archive_pruned) and counted with the archives
    for db in sorted(stores):
        if (error := _collect(rt, db)) is not None:
            result.gc_failed.append((db, error))
    return result


def _delete(rt: Runtime, db: str, name: str) -> None:
    """Delete backup ``name``'s manifest in ``db``'s store (gone already: done), then its
    deletion marker."""
    store = store_path(rt.backup_dir, db, create=False)
    if store is not None:
        with contextlib.suppress(PageBackupNotFoundError):
            pagestore.delete_backup(store, name, on_problem=cache_problem)
        forget_verified(rt.backup_dir, db, name)
    drop_marker(rt.backup_dir, DELETING_DIR, db, name)


def _not_as_listed(rt: Runtime, expired: Sequence[ArchiveInfo]) -> list[tuple[ArchiveInfo, str]]:
    """Each expired backup whose own manifests (read now: only theirs) disagree with the
    cached summary the selection judged (policy, sequence, time), and why; when any does, every
    store's brief cache is dropped (a planted or stale cache never decides what is deleted)."""
    out = []
    for info in expired:
        backup = find_page_backup(rt.backup_dir, info.name)
        made = [] if backup is None else [m.created_at for m in backup.manifests.values()]
        times = {datetime.fromisoformat(t) for t in made}
        seen = None if backup is None else (backup.policy, backup.sequence)
        if seen != (info.policy, info.sequence) or info.created_at not in times:
            why = f"its manifests say {seen} at {sorted(made)}, the store's brief cache said " + (
                f"{(info.policy, info.sequence)} at {info.created_at.isoformat()}"
            )
            log.error("page_prune_refused", backup=info.name, reason=why)
            out.append((info, f"not deleted: {why}; the cache is dropped"))
    for db in store_names(rt.backup_dir) if out else ():
        store = store_path(rt.backup_dir, db, create=False)
        if store is not None:
            with pagestore.fsio.open_store(store, exclusive=True, timeout_s=LOCK_TIMEOUT_S) as d:
                pagestore.fsio.discard(d.root_fd, BRIEFS)  # a listing then reads every one
    return out


def _finish_deletions(rt: Runtime, stores: set[str]) -> list[tuple[str, str]]:
    """Delete what a killed prune left of the backups it was deleting (one database's
    manifest gone, another's still there: listed damaged, never counted nor pruned by a rule);
    (database, why) for each it could not."""
    failed = []
    for db in store_names(rt.backup_dir):
        for name in sorted(marked_names(rt.backup_dir, DELETING_DIR, db)):
            stores.add(db)
            try:
                _delete(rt, db, name)
            except (PageStoreError, OSError) as exc:
                failed.append((db, f"finishing the deletion of {name!r}: {exc}"))
                continue
            log.info("page_deletion_finished", database=db, backup=name)
    return failed


def _owed(rt: Runtime) -> set[str]:
    """The stores whose GC a prune owes: it deleted manifests and was killed, or its GC
    failed, before the sweep finished (``pages/.gc/<db>/due``)."""
    return {db for db in store_names(rt.backup_dir) if marked_names(rt.backup_dir, GC_DIR, db)}


def _collect(rt: Runtime, db: str) -> str | None:
    """Collect ``db``'s store; why it failed, or None."""
    store = store_path(rt.backup_dir, db, create=False)
    try:
        report = (
            pagestore.collect_garbage(
                store,
                repack_below=REPACK_BELOW,
                repack_when=REPACK_WHEN,
                on_problem=cache_problem,
            )
            if store
            else None
        )
        drop_marker(rt.backup_dir, GC_DIR, db, GC_DUE)
    except (PageStoreError, OSError) as exc:  # the marker stays: the next prune collects
        log.error("page_gc_failed", database=db, error=str(exc))
        return str(exc)
    if report:
        log.info(
            "page_gc_completed",
            database=db,
            packs_deleted=len(report.packs_deleted),
            bytes_freed=report.bytes_freed,
            packs_kept=report.packs_kept,
        )
    repacked = report.repacked if report else None
    if repacked and repacked.refused:
        log.error("page_repack_refused", database=db, reason=repacked.refused)
    elif repacked and repacked.packs_repacked:
        log.info(
            "page_repack_completed",
            database=db,
            packs_repacked=len(repacked.packs_repacked),
            packs_written=len(repacked.packs_written),
            manifests_rewritten=repacked.manifests_rewritten,
            bytes_reclaimed=repacked.bytes_reclaimed,
        )
    return None


def _backups(rt: Runtime) -> list[ArchiveInfo]:
    """One entry per incremental backup name, covering every store that holds it; ``verified``
    when every store holding it has its verify marker; damaged when any store's summary is
    (an incomplete backup is, in every store: pagesummary.page_backups)."""
    out: list[ArchiveInfo] = []
    verified = {
        db: marked_names(rt.backup_dir, VERIFIED_DIR, db) for db in store_names(rt.backup_dir)
    }
    for name, infos in page_backups(rt.backup_dir).items():
        first, *rest = infos.values()
        info = dataclasses.replace(
            first,
            databases=tuple(infos),
            size_bytes=sum(i.size_bytes for i in infos.values()),
            status=max((first, *rest), key=lambda i: _badness(i.status)).status,
        )
        if info.status is ArchiveStatus.UNVERIFIED and all(
            name in verified.get(db, set()) for db in infos
        ):
            info = dataclasses.replace(info, status=ArchiveStatus.VERIFIED)
        out.append(info)
    return out


def _badness(status: ArchiveStatus) -> int:
    return 1 if status is ArchiveStatus.DAMAGED else 0
