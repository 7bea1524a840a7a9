"""The page store: page-level incremental backups of SQLite databases.

A backup reads every page of the live database inside one read transaction (``reader``),
stores each page not already stored into zstd packs addressed by SHA-256 (``packs``,
``backup``) and writes a manifest naming every page's location and the image's SHA-256
(``manifest``). Any backup rebuilds into a checked image or a standalone tar.gz
(``rebuild``); deleting a backup and collecting unused packs never breaks another (``gc``).
Layout and atomicity: ``fsio``. Imports only itself, ``errors`` and ``archiver.safefs``.
"""

from __future__ import annotations

from backup_sidecar.pagestore.backup import create_backup
from backup_sidecar.pagestore.gc import GcReport, collect_garbage, delete_backup
from backup_sidecar.pagestore.manifest import Manifest, Run
from backup_sidecar.pagestore.rebuild import export, list_backups, rebuild

__all__ = [
    "GcReport",
    "Manifest",
    "Run",
    "collect_garbage",
    "create_backup",
    "delete_backup",
    "export",
    "list_backups",
    "rebuild",
]
