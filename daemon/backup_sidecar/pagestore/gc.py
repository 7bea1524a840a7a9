"""Retention that never breaks a chain: delete a backup's manifest, then sweep unused packs.

Deleting a backup removes only its manifest (one unlink): the packs it shares with other
backups stay. Garbage collection marks every pack that a kept manifest names and sweeps the
rest, with temporary files left by crashed writes. Both hold the store's exclusive lock, so no
backup is between publishing its packs and its manifest. A manifest that cannot be read stops
the sweep (its packs are unknown): a GC never deletes what a kept backup may need, and a kill
at any point leaves each pack either in place or unreferenced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from backup_sidecar.errors import (
    GarbageCollectionRefusedError,
    ManifestFormatError,
    PackFormatError,
    PageBackupNotFoundError,
)
from backup_sidecar.pagestore import fsio, manifest
from backup_sidecar.pagestore.briefs import Problem, brief_of, briefs_in, remember
from backup_sidecar.pagestore.damage import drop_marks
from backup_sidecar.pagestore.fsio import LOCK_TIMEOUT_S
from backup_sidecar.pagestore.manifest import manifest_file
from backup_sidecar.pagestore.packformat import SUFFIX, PackIndex, pack_file, read_index
from backup_sidecar.pagestore.rebuild import load_manifest
from backup_sidecar.pagestore.repack import Liveness, RepackReport, repack
from backup_sidecar.pagestore.repackdue import add_debt, clear_debt, repack_due


@dataclass(frozen=True)
class GcReport:
    """What a garbage collection removed and kept."""

    packs_deleted: tuple[str, ...]
    bytes_freed: int
    temps_removed: int
    packs_kept: int
    #: What the repack after the sweep did (None: not asked for).
    repacked: RepackReport | None = None


def delete_backup(
    store: Path,
    name: str,
    *,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
    on_problem: Problem | None = None,
) -> None:
    """Remove backup ``name``'s manifest (durably); its packs wait for the next GC. The bytes
    it stored are added to the store's repack debt first (repackdue.py)."""
    file = manifest_file(name)
    with fsio.open_store(store, exclusive=True, timeout_s=lock_timeout_s) as dirs:
        try:
            stored = brief_of(dirs, name).stats.get("bytes_stored")
        except ManifestFormatError:
            stored = None  # its bytes unknown: the next repack pass is due
        add_debt(dirs, stored, on_problem=on_problem or (lambda _: None))
        try:
            os.unlink(file, dir_fd=dirs.manifests_fd)
        except FileNotFoundError:
            raise PageBackupNotFoundError(name) from None
        os.fsync(dirs.manifests_fd)


def collect_garbage(
    store: Path,
    *,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
    repack_below: float | None = None,
    repack_when: float | None = None,
    on_problem: Problem | None = None,
) -> GcReport:
    """Delete every pack no manifest needs (names, or holds a base of a delta it names), and
    leftover temporary files; with ``repack_below``, then repack the packs whose live
    fraction is below it (repack.py): every time, or with ``repack_when`` only when the
    store's repack debt reached that fraction of its pack bytes (repackdue.py).

    The packs each manifest names come from the store's briefs (briefs.py: a manifest is
    parsed only when new or changed since it was cached), their delta bases from the packs'
    indexes; only a repack pass parses every manifest's runs."""
    report = on_problem or (lambda _: None)
    with fsio.open_store(store, exclusive=True, timeout_s=lock_timeout_s) as dirs:
        present = {f.removesuffix(SUFFIX) for f in fsio.listdir(dirs.packs_fd, SUFFIX)}
        indexes: dict[str, PackIndex] = {}
        referenced = _mark(dirs, _named_packs(dirs, report), present, indexes)
        temps = 0
        for fd in (dirs.manifests_fd, dirs.packs_fd):
            for tmp in fsio.list_temps(fd):
                fsio.discard(fd, tmp)
                temps += 1
        deleted: list[str] = []
        freed = 0
        for pack_id in sorted(present - referenced):
            file = pack_file(pack_id)
            freed += os.stat(file, dir_fd=dirs.packs_fd, follow_symlinks=False).st_size
            os.unlink(file, dir_fd=dirs.packs_fd)
            deleted.append(pack_id)
        drop_marks(dirs, present - set(deleted))
        for fd in (dirs.manifests_fd, dirs.packs_fd):
            os.fsync(fd)
        kept = present & referenced
        repacked = None
        if repack_below is not None and (
            repack_when is None
            or repack_due(dirs, when=repack_when, store_bytes=_bytes(dirs, kept))
        ):
            live = _liveness(dirs)
            live.indexes.update(indexes)
            repacked = repack(dirs, live, below=repack_below)
            if repacked.briefs:
                remember(dirs, repacked.briefs, on_problem=report)
            clear_debt(dirs, on_problem=report)
        return GcReport(tuple(deleted), freed, temps, len(kept), repacked)


def _named_packs(dirs: fsio.StoreDirs, report: Problem) -> set[str]:
    """Every pack a manifest names, from the store's briefs; GarbageCollectionRefusedError
    if a manifest cannot be read, or a manifest file's name is no backup's (never ours to
    judge)."""
    for file in fsio.listdir(dirs.manifests_fd, manifest.SUFFIX):
        try:
            manifest.check_name(file.removesuffix(manifest.SUFFIX))
        except ValueError as exc:
            raise GarbageCollectionRefusedError(file, str(exc)) from exc
    named: set[str] = set()
    for entry in briefs_in(dirs, on_problem=report):
        if isinstance(entry, ManifestFormatError):
            raise GarbageCollectionRefusedError(entry.name, entry.reason) from entry
        named |= entry.packs
    return named


def _liveness(dirs: fsio.StoreDirs) -> Liveness:
    """Every slot a manifest names (each manifest parsed in full: a repack pass's cost);
    GarbageCollectionRefusedError if one cannot be read."""
    live = Liveness()
    for file in fsio.listdir(dirs.manifests_fd, manifest.SUFFIX):
        name = file.removesuffix(manifest.SUFFIX)
        try:
            live.add(load_manifest(dirs, name))
        except ManifestFormatError as exc:
            raise GarbageCollectionRefusedError(name, exc.reason) from exc
    return live


def _bytes(dirs: fsio.StoreDirs, packs: set[str]) -> int:
    return sum(
        os.stat(pack_file(p), dir_fd=dirs.packs_fd, follow_symlinks=False).st_size for p in packs
    )


def _mark(
    dirs: fsio.StoreDirs, named: set[str], present: set[str], indexes: dict[str, PackIndex]
) -> set[str]:
    """``named`` and, transitively, the base packs of their deltas (each index read kept in
    ``indexes``). A pack already missing is skipped (its backups are broken either way); one
    whose index cannot be read refuses the sweep, since its bases are unknown."""
    marked: set[str] = set()
    todo = sorted(named)
    while todo:
        pack_id = todo.pop()
        if pack_id in marked:
            continue
        marked.add(pack_id)
        if pack_id not in present:
            continue
        try:
            index = read_index(dirs.packs_fd, pack_id, where=dirs.packs)
            bases = index.bases
        except (PackFormatError, OSError) as exc:
            raise GarbageCollectionRefusedError(f"pack {pack_id}", str(exc)) from exc
        indexes[pack_id] = index
        todo.extend(sorted(bases - marked))
    return marked
