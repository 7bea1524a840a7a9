"""The incremental backup job (``mode: incremental``): one page-store backup per database.

Each database's pages are read in one read transaction by a child process
(``read_in_child=True``): the daemon's health watcher and restores open the same files through
the stdlib ``sqlite3``, and a second SQLite library in this process could drop their POSIX
locks (docs/pagestore.md). The policy's ``check`` runs in that transaction. The parent is the
policy's newest backup in that database's store (by creation sequence, never the clock),
unless ``rebase`` starts a new chain. A failure removes the manifests this backup already
wrote for other databases: a restore point covers all its databases or does not exist.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from backup_sidecar import pagestore
from backup_sidecar.archiver import ArchiveInfo, ArchiveStatus, DatabaseSpec
from backup_sidecar.archiver.sequence import next_sequence, reconcile
from backup_sidecar.archiver.staging import reserve_name
from backup_sidecar.errors import PageStoreError
from backup_sidecar.jobs.effort import Effort
from backup_sidecar.jobs.pagestores import page_name_taken, store_path
from backup_sidecar.jobs.pagesummary import page_successes, store_summary
from backup_sidecar.jobs.runtime import IncrementalSpec
from backup_sidecar.pagestore import fsio
from backup_sidecar.pagestore.rebuild import load_manifest

log = structlog.get_logger(__name__)


def incremental_backup(
    specs: list[DatabaseSpec],
    *,
    backup_dir: Path,
    name: str,
    policy: str,
    spec: IncrementalSpec,
    now: datetime,
    effort: Effort,
    unique: bool,
) -> tuple[ArchiveInfo, dict[str, pagestore.Manifest]]:
    """Back ``specs`` up into their page stores as ``name``; (the backup as `list` shows it,
    each database's manifest)."""
    # The counter is a cache rebuilt from the archives alone: raise it past every incremental
    # backup first, or a lost counter would hand out numbers the chains already hold.
    seen = max((a.sequence or 0 for a in page_successes(backup_dir)), default=0)
    reconcile(backup_dir, seen=seen)
    sequence = next_sequence(backup_dir)
    stores = {s.name: store_path(backup_dir, s.name, create=True) for s in specs}
    # One name, one backup of either kind: reserved as an archive's is (the first free of
    # name, name-2, ... for a default name), taken when an archive or a page store has it.
    taken = functools.partial(page_name_taken, backup_dir)
    with reserve_name(backup_dir, name, exact=not unique, taken=taken) as claimed:
        written: dict[str, pagestore.Manifest] = {}
        try:
            for db in specs:
                store = stores[db.name]
                assert store is not None
                parent, chain, sound = _parent(
                    backup_dir, db.name, store, policy=policy, spec=spec, now=now
                )
                meta: dict[str, Any] = {
                    "backup_name": claimed,
                    "policy": policy,
                    "sequence": sequence,
                    "database": db.name,
                    "backup_databases": [s.name for s in specs],
                    "member": db.member,
                    "source_path": str(db.path),
                    "chain": chain,
                }
                written[db.name] = pagestore.create_backup(
                    db.path,
                    store=store,
                    name=claimed,
                    now=now,
                    parent=parent,
                    metadata=meta,
                    busy_timeout_s=effort.lock_timeout,
                    read_in_child=True,
                    check=spec.check,
                    reuse_check=sound,
                )
        except BaseException:
            for db_name in written:
                with contextlib.suppress(PageStoreError, OSError):
                    pagestore.delete_backup(stores[db_name], claimed)  # type: ignore[arg-type]
            raise
    first = next(iter(written))
    info = ArchiveInfo(
        name=claimed,
        path=stores[first] / "manifests" / f"{claimed}.json",  # type: ignore[operator]
        size_bytes=sum(m.stats.get("bytes_stored", 0) for m in written.values()),
        created_at=now,
        status=ArchiveStatus.UNVERIFIED,
        policy=policy,
        databases=tuple(written),
        sequence=sequence,
        kind="incremental",
        check=spec.check,
    )
    return info, written


def _parent(
    backup_dir: Path, db: str, store: Path, *, policy: str, spec: IncrementalSpec, now: datetime
) -> tuple[str | None, dict[str, Any], bool]:
    """The parent backup of the next one in ``store``, the new backup's chain record
    (``base``: the chain's first backup, ``length``: backups in the chain, this one included,
    ``base_created_at`` and ``stored_before``: bytes the chain stored before this backup), and
    whether the parent's check may stand for an identical image (not if it is marked damaged)."""
    # The head by the stores' cached summaries: one manifest read, not every one of the chain.
    briefs = [a for a in store_summary(backup_dir, db) if a.policy == policy]
    newest = max(briefs, key=lambda a: a.newness, default=None)
    head = _load(store, newest.name) if newest else None
    chain = head.metadata.get("chain") if head else None
    if head is None or not isinstance(chain, Mapping) or _rebase(head, chain, spec, now):
        return None, {"base": None, "length": 1, "stored_before": 0}, False
    stored = int(chain.get("stored_before", 0)) + head.stats.get("bytes_stored", 0)
    return (
        head.name,
        {
            "base": chain.get("base") or head.name,
            "base_created_at": chain.get("base_created_at") or head.created_at,
            "length": int(chain.get("length", 1)) + 1,
            "stored_before": stored,
        },
        newest is not None and newest.status != ArchiveStatus.DAMAGED,
    )


def _load(store: Path, name: str) -> pagestore.Manifest | None:
    """The manifest ``name`` (None if it went or cannot be read: the next backup is a base)."""
    try:
        with fsio.open_store(store, exclusive=False, timeout_s=fsio.LOCK_TIMEOUT_S) as dirs:
            return load_manifest(dirs, name)
    except (PageStoreError, OSError):
        return None


def _rebase(
    head: pagestore.Manifest, chain: Mapping[str, Any], spec: IncrementalSpec, now: datetime
) -> bool:
    """Whether the next backup starts a new chain instead of continuing ``head``'s."""
    if spec.rebase_after is not None:
        started = datetime.fromisoformat(str(chain.get("base_created_at") or head.created_at))
        if (now - started).total_seconds() >= spec.rebase_after:
            return True
    if spec.rebase_fraction is not None:
        stored = int(chain.get("stored_before", 0)) + head.stats.get("bytes_stored", 0)
        if stored > spec.rebase_fraction * head.image_size:
            return True
    return False


def manifest_stats(manifests: Mapping[str, pagestore.Manifest]) -> dict[str, dict[str, int]]:
    """Per database: pages read, pages new, bytes stored and chain length, for logs/metrics."""
    out = {}
    for db, m in manifests.items():
        chain = m.metadata.get("chain")
        length = chain.get("length", 1) if isinstance(chain, Mapping) else 1
        out[db] = {
            "pages_read": m.stats.get("pages_read", 0),
            "pages_new": m.stats.get("pages_new", 0),
            "bytes_stored": m.stats.get("bytes_stored", 0),
            "chain_length": int(length),
        }
    return out
