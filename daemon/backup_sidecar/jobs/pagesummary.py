"""Each incremental backup in brief, for the daemon's health: cheap enough for every interval.

The health watcher and the last-success ledger re-read the backup directory every
``health.interval``; an incremental policy's backups must count there (its last success, its
overdue check), but reading every manifest each time (up to megabytes each) would not do. So
each manifest is parsed once and remembered by its identity (inode, size, mtime): an unchanged
store costs one directory listing and a stat per manifest. The store is opened with its shared
lock for at most ``LOCK_WAIT_S``: while a backup or GC holds it, the store's last summary
stands (the watcher never waits on a long backup).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from datetime import datetime
from pathlib import Path

from backup_sidecar.archiver import ArchiveInfo, ArchiveStatus
from backup_sidecar.errors import ManifestFormatError, PageStoreError, SidecarError
from backup_sidecar.jobs.pagedamage import DAMAGED_DIR, damage_of, marked_names
from backup_sidecar.jobs.pagestores import store_names, store_path
from backup_sidecar.pagestore import fsio, manifest

LOCK_WAIT_S = 0.2
_Key = tuple[int, int, int]
#: (summary, image SHA-256) of a manifest, or None if unreadable
_Entry = tuple[ArchiveInfo, str] | None
_lock = threading.Lock()
#: (backup dir, db) -> manifest file -> (identity, entry)
_cache: dict[tuple[str, str], dict[str, tuple[_Key, _Entry]]] = {}


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


def store_summary(backup_dir: Path, db: str) -> list[ArchiveInfo]:
    """Every readable backup in ``db``'s page store, in brief (any order); one listing of
    the damage markers, read only for the backups that have one."""
    key = (str(backup_dir), db)
    with _lock:
        previous = dict(_cache.get(key, {}))
    try:
        store = store_path(backup_dir, db, create=False)
        if store is None:
            return []
        current = _read(store, db, previous)
    except (OSError, SidecarError):  # busy (a backup holds it), or unreadable: as last seen
        current = previous
    with _lock:
        _cache[key] = current
    damaged = marked_names(backup_dir, DAMAGED_DIR, db)
    out = []
    for _, entry in current.values():
        if entry is None:
            continue
        info, sha = entry
        why = damage_of(backup_dir, db, info.name, sha) if info.name in damaged else None
        if why is not None:
            info = dataclasses.replace(info, status=ArchiveStatus.DAMAGED, error=why)
        out.append(info)
    return out


def _read(
    store: Path, db: str, previous: dict[str, tuple[_Key, _Entry]]
) -> dict[str, tuple[_Key, _Entry]]:
    current: dict[str, tuple[_Key, _Entry]] = {}
    with fsio.open_store(store, exclusive=False, timeout_s=LOCK_WAIT_S) as dirs:
        for file in fsio.listdir(dirs.manifests_fd, manifest.SUFFIX):
            try:
                st = os.stat(file, dir_fd=dirs.manifests_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            ident = (st.st_ino, st.st_size, st.st_mtime_ns)
            seen = previous.get(file)
            if seen is not None and seen[0] == ident:
                current[file] = seen
                continue
            current[file] = (ident, _summary(dirs, store, db, file))
    return current


def _summary(dirs: fsio.StoreDirs, store: Path, db: str, file: str) -> _Entry:
    name = file.removesuffix(manifest.SUFFIX)
    try:
        data = fsio.read_file(
            dirs.manifests_fd, file, where=dirs.manifests / file, limit=manifest.MAX_BYTES
        )
        m = manifest.parse_manifest(name, data)
    except (OSError, ManifestFormatError, PageStoreError, SidecarError, ValueError):
        return None
    sequence = m.metadata.get("sequence")
    info = ArchiveInfo(
        name=name,
        path=store / "manifests" / file,
        size_bytes=m.stats.get("bytes_stored", 0),
        created_at=datetime.fromisoformat(m.created_at),
        status=ArchiveStatus.UNVERIFIED,
        policy=str(m.metadata.get("policy", "")),
        databases=(db,),
        sequence=sequence if type(sequence) is int else None,
        kind="incremental",
    )
    return info, m.image_sha256
