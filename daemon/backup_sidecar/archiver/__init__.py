"""The core archiver: snapshot, pack, list, verify, restore and retention of SQLite databases.

Standard library and compression libraries only: it knows nothing of settings, logging,
metrics, scheduling or the control socket. Time, places and progress are passed in.
"""

from backup_sidecar.archiver.backup import DEFAULT_LEVEL, create_backup
from backup_sidecar.archiver.catalog import (
    Catalog,
    CatalogSnapshot,
    list_archives,
    read_manifest,
    resolve_archive,
)
from backup_sidecar.archiver.damage import mark_damaged, remove_orphan_markers
from backup_sidecar.archiver.gfs import UNLIMITED, KeepRules
from backup_sidecar.archiver.leftovers import clean_leftovers
from backup_sidecar.archiver.locks import DirectoryLock, database_locks
from backup_sidecar.archiver.manifest import ARCHIVE_SUFFIX, default_name, validate_name
from backup_sidecar.archiver.model import (
    ArchiveInfo,
    ArchiveStatus,
    DatabaseSpec,
    Limits,
    ProgressFn,
    RestoreResult,
)
from backup_sidecar.archiver.newdatabase import clean_restore_leftovers
from backup_sidecar.archiver.prerestore import PRE_RESTORE_POLICY, rescued_content
from backup_sidecar.archiver.readcheck import ReadCheckCache, read_check
from backup_sidecar.archiver.restore import restore_archive
from backup_sidecar.archiver.retention import (
    PruneResult,
    Selection,
    delete_archives,
    select,
    select_expired,
)
from backup_sidecar.archiver.safefs import check_backup_dir
from backup_sidecar.archiver.sequence import reconcile as reconcile_sequence
from backup_sidecar.archiver.staging import free_bytes, staging_area
from backup_sidecar.archiver.verify import VerifiedArchive, verify_archive

__all__ = [
    "ARCHIVE_SUFFIX",
    "DEFAULT_LEVEL",
    "PRE_RESTORE_POLICY",
    "UNLIMITED",
    "ArchiveInfo",
    "ArchiveStatus",
    "Catalog",
    "CatalogSnapshot",
    "DatabaseSpec",
    "DirectoryLock",
    "KeepRules",
    "Limits",
    "ProgressFn",
    "PruneResult",
    "ReadCheckCache",
    "RestoreResult",
    "Selection",
    "VerifiedArchive",
    "check_backup_dir",
    "clean_leftovers",
    "clean_restore_leftovers",
    "create_backup",
    "database_locks",
    "default_name",
    "delete_archives",
    "free_bytes",
    "list_archives",
    "mark_damaged",
    "read_check",
    "read_manifest",
    "reconcile_sequence",
    "remove_orphan_markers",
    "rescued_content",
    "resolve_archive",
    "restore_archive",
    "select",
    "select_expired",
    "staging_area",
    "validate_name",
    "verify_archive",
]
