"""The page store: page-level incremental backups of SQLite databases.

A backup (``backup``) reads every page of the live database inside one read transaction
(``reader``), stores each page not already stored into zstd packs addressed by SHA-256, a
changed one as a delta of its parent backup's page (``placing``, ``packwrite``,
``packformat``), and writes a manifest naming every page's location and the image's SHA-256
(``manifest``, ``header``). Any backup rebuilds into a checked image or a standalone tar.gz
(``rebuild``, ``packread``); a listing reads briefs cached by manifest identity
(``briefs``); deleting a backup and collecting unused packs never breaks another (``gc``),
nor does repacking mostly-dead packs (``repack``, when due: ``repackdue``). Layout, lock and
atomic writes: ``fsio``. Imports only itself, ``errors`` and ``archiver.safefs``;
docs/pagestore.md has the design and the measurements.
"""

from __future__ import annotations

from backup_sidecar.pagestore.backup import create_backup
from backup_sidecar.pagestore.briefs import Brief, list_briefs
from backup_sidecar.pagestore.gc import GcReport, collect_garbage, delete_backup
from backup_sidecar.pagestore.manifest import Manifest, Run
from backup_sidecar.pagestore.rebuild import export, list_backups, rebuild

__all__ = [
    "Brief",
    "GcReport",
    "Manifest",
    "Run",
    "collect_garbage",
    "create_backup",
    "delete_backup",
    "export",
    "list_backups",
    "list_briefs",
    "rebuild",
]
