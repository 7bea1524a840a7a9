"""Packs known damaged: ``packs/<32 hex>.damaged`` beside ``<32 hex>.pack``.

A rebuild (verify, scrub, drill, restore, export) that finds a pack's frame undecodable or a
slot whose page does not match its SHA-256 records the pack here (the reason inside). A new
backup then never names a page of that pack (``backup.known_pages`` leaves it out) nor builds
a delta on one: it stores the page again, so a backup made after the damage was found
rebuilds even though its pages equal the damaged ones. The mark goes with the pack (the GC
removes a mark whose pack is gone); a pack mended by hand keeps its mark (its pages are only
stored again: safe). The mark is written under the store's shared lock: only a backup (which
holds the exclusive one) reads it.
"""

from __future__ import annotations

import contextlib
import os

from backup_sidecar.pagestore import fsio

SUFFIX = ".damaged"


def damaged_packs(dirs: fsio.StoreDirs) -> frozenset[str]:
    """The packs marked damaged."""
    return frozenset(f.removesuffix(SUFFIX) for f in fsio.listdir(dirs.packs_fd, SUFFIX))


def mark_damaged(dirs: fsio.StoreDirs, pack_id: str, reason: str) -> None:
    """Record that ``pack_id`` is damaged (best effort: a read-only store stays unmarked)."""
    with contextlib.suppress(OSError):
        fsio.write_file(
            dirs.packs_fd, pack_id + SUFFIX, reason.encode(), where=dirs.packs, replace=True
        )


def drop_marks(dirs: fsio.StoreDirs, present: set[str]) -> int:
    """Remove the marks of packs no longer present; how many."""
    gone = damaged_packs(dirs) - present
    for pack_id in gone:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pack_id + SUFFIX, dir_fd=dirs.packs_fd)
    return len(gone)
