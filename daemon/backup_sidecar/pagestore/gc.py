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
    PageBackupNotFoundError,
)
from backup_sidecar.pagestore import fsio, manifest, packs
from backup_sidecar.pagestore.backup import LOCK_TIMEOUT_S
from backup_sidecar.pagestore.manifest import manifest_file
from backup_sidecar.pagestore.rebuild import load_manifest


@dataclass(frozen=True)
class GcReport:
    """What a garbage collection removed and kept."""

    packs_deleted: tuple[str, ...]
    bytes_freed: int
    temps_removed: int
    packs_kept: int


def delete_backup(store: Path, name: str, *, lock_timeout_s: float = LOCK_TIMEOUT_S) -> None:
    """Remove backup ``name``'s manifest (durably); its packs wait for the next GC."""
    file = manifest_file(name)
    with fsio.open_store(store, exclusive=True, timeout_s=lock_timeout_s) as dirs:
        try:
            os.unlink(file, dir_fd=dirs.manifests_fd)
        except FileNotFoundError:
            raise PageBackupNotFoundError(name) from None
        os.fsync(dirs.manifests_fd)


def collect_garbage(store: Path, *, lock_timeout_s: float = LOCK_TIMEOUT_S) -> GcReport:
    """Delete every pack no manifest names, and leftover temporary files."""
    with fsio.open_store(store, exclusive=True, timeout_s=lock_timeout_s) as dirs:
        referenced: set[str] = set()
        for file in fsio.listdir(dirs.manifests_fd, manifest.SUFFIX):
            name = file.removesuffix(manifest.SUFFIX)
            try:
                referenced |= load_manifest(dirs, name).packs
            except ManifestFormatError as exc:
                raise GarbageCollectionRefusedError(name, exc.reason) from exc
            except ValueError as exc:  # a file whose name is no backup's: never ours to judge
                raise GarbageCollectionRefusedError(file, str(exc)) from exc
        temps = 0
        for fd in (dirs.manifests_fd, dirs.packs_fd):
            for tmp in fsio.list_temps(fd):
                fsio.discard(fd, tmp)
                temps += 1
        deleted: list[str] = []
        freed = kept = 0
        for file in fsio.listdir(dirs.packs_fd, packs.SUFFIX):
            pack_id = file.removesuffix(packs.SUFFIX)
            if pack_id in referenced:
                kept += 1
                continue
            freed += os.stat(file, dir_fd=dirs.packs_fd, follow_symlinks=False).st_size
            os.unlink(file, dir_fd=dirs.packs_fd)
            deleted.append(pack_id)
        for fd in (dirs.manifests_fd, dirs.packs_fd):
            os.fsync(fd)
        return GcReport(tuple(deleted), freed, temps, kept)
