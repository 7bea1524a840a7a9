"""Each incremental backup in brief, for the daemon's health: cheap enough for every interval.

The health watcher and the last-success ledger re-read the backup directory every
``health.interval``; an incremental policy's backups must count there (its last success, its
overdue check), but reading every manifest each time (up to megabytes each) would not do. So
the stores' briefs are read through their cache (pagestore/briefs.py: each manifest parsed
once, remembered by its file's identity, on disk for every process and in memory): an
unchanged store costs one directory listing and a stat per manifest. The store is opened with
its shared lock for at most ``LOCK_WAIT_S``: while a backup or GC holds it, the store's last
summary in this process stands (the watcher never waits on a long backup).
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import datetime
from pathlib import Path

from backup_sidecar import pagestore
from backup_sidecar.archiver import ArchiveInfo, ArchiveStatus
from backup_sidecar.errors import SidecarError
from backup_sidecar.jobs.pagedamage import DAMAGED_DIR, damage_of, marked_names
from backup_sidecar.jobs.pagestores import cache_problem, misplaced, store_names, store_path

LOCK_WAIT_S = 0.2
#: (summary, image SHA-256, the databases its backup covers) of a readable manifest
_Entry = tuple[ArchiveInfo, str, tuple[str, ...]]
_lock = threading.Lock()
#: (backup dir, db) -> the store's readable backups, as last read
_cache: dict[tuple[str, str], list[_Entry]] = {}


def page_successes(backup_dir: Path) -> list[ArchiveInfo]:
    """One entry per incremental backup whose manifest reads (status ``unverified``, or
    ``damaged`` once a scrub, drill or chain-head check marked it; kind ``incremental``),
    newest first by creation sequence."""
    by_name: dict[str, ArchiveInfo] = {}
    try:
        dbs = store_names(backup_dir)
    except (OSError, SidecarError):
        return []
    for db in dbs:
        for info in store_summary(backup_dir, db):
            by_name.setdefault(info.name, info)
    return sorted(by_name.values(), key=lambda a: a.newness, reverse=True)


def page_backups(backup_dir: Path) -> dict[str, dict[str, ArchiveInfo]]:
    """Every incremental backup (name -> database -> its summary in that store). A backup
    lacking a readable manifest in the store of a database its metadata names (a kill between
    two databases' manifests, or a store busy mid-backup) is incomplete: damaged in every
    store, with the reason, so retention neither counts nor deletes it and it is never
    uploaded (as a damaged archive, archiver.select)."""
    entries: dict[str, dict[str, ArchiveInfo]] = {}
    covers: dict[str, set[str]] = {}
    for db in store_names(backup_dir):
        for info, expected in _store_entries(backup_dir, db):
            entries.setdefault(info.name, {})[db] = info
            covers.setdefault(info.name, set()).update(expected)
    for name, infos in entries.items():
        missing = sorted(covers[name] - set(infos))
        if missing:
            why = f"no manifest in the page store of {', '.join(missing)}: never completed"
            entries[name] = {
                db: dataclasses.replace(i, status=ArchiveStatus.DAMAGED, error=i.error or why)
                for db, i in infos.items()
            }
    return entries


def store_summary(backup_dir: Path, db: str) -> list[ArchiveInfo]:
    """Every readable backup in ``db``'s page store, in brief (any order); one listing of
    the damage markers, read only for the backups that have one."""
    return [info for info, _ in _store_entries(backup_dir, db)]


def _store_entries(backup_dir: Path, db: str) -> list[tuple[ArchiveInfo, tuple[str, ...]]]:
    key = (str(backup_dir), db)
    try:
        store = store_path(backup_dir, db, create=False)
        if store is None:
            return []
        briefs = pagestore.list_briefs(store, lock_timeout_s=LOCK_WAIT_S, on_problem=cache_problem)
        current = [_summary(store, db, b) for b in briefs if isinstance(b, pagestore.Brief)]
        with _lock:
            _cache[key] = current
    except (OSError, SidecarError):  # busy (a backup holds it), or unreadable: as last seen
        with _lock:
            current = list(_cache.get(key, []))
    damaged = marked_names(backup_dir, DAMAGED_DIR, db)
    out = []
    for info, sha, covers in current:
        why = damage_of(backup_dir, db, info.name, sha) if info.name in damaged else None
        marked = dataclasses.replace(info, status=ArchiveStatus.DAMAGED, error=why) if why else info
        out.append((marked, covers))
    return out


def _summary(store: Path, db: str, b: pagestore.Brief) -> _Entry:
    sequence = b.metadata.get("sequence")
    info = ArchiveInfo(
        name=b.name,
        path=store / "manifests" / f"{b.name}.json",
        size_bytes=b.stats.get("bytes_stored", 0),
        created_at=datetime.fromisoformat(b.created_at),
        status=ArchiveStatus.UNVERIFIED,
        policy=str(b.metadata.get("policy", "")),
        databases=(db,),
        sequence=sequence if type(sequence) is int else None,
        kind="incremental",
    )
    covers = b.metadata.get("backup_databases")
    names = tuple(d for d in covers if isinstance(d, str)) if isinstance(covers, list) else ()
    why = misplaced(db, b.metadata)
    if why is not None:  # another database's manifest: never this backup of ``db``
        info = dataclasses.replace(info, status=ArchiveStatus.DAMAGED, error=why)
    return info, b.image_sha256, names
