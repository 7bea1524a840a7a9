"""The restore of an incremental backup: rebuilt into the staging area, then restored as an
archive is (archiver.restore_verified: the same planning, pre-restore safety archive, locks
and hot write into the live files; nothing lost)."""

from __future__ import annotations

from collections.abc import Sequence

from backup_sidecar import archiver
from backup_sidecar.archiver.restore import restore_verified
from backup_sidecar.archiver.verify import VerifiedArchive
from backup_sidecar.jobs.effort import Effort
from backup_sidecar.jobs.pagecheck import rebuild_checked
from backup_sidecar.jobs.pageexport import archive_metadata
from backup_sidecar.jobs.pagestores import PageBackup, pages_root
from backup_sidecar.jobs.runtime import Runtime


def restore_page_backup(
    rt: Runtime,
    backup: PageBackup,
    *,
    targets: Sequence[str],
    dry_run: bool,
    effort: Effort,
) -> archiver.RestoreResult:
    """Rebuild and check ``backup``'s images in a staging area, then restore ``targets`` from
    them; the caller holds the databases' locks."""
    archiver.check_backup_dir(rt.backup_dir)
    _, manifest = archive_metadata(backup)
    with archiver.staging_area(rt.backup_dir, purpose="restore") as area:
        staged = rebuild_checked(rt.backup_dir, backup, into=area, should_stop=effort.should_stop)
        verified = VerifiedArchive(
            name=backup.name, path=pages_root(rt.backup_dir), manifest=manifest, staged=staged
        )
        keywords = effort.archiver_keywords()
        return restore_verified(
            verified,
            area=area,
            databases=rt.databases,
            selected=targets,
            backup_dir=rt.backup_dir,
            now=rt.clock(),
            dry_run=dry_run,
            level=keywords["level"],
            threads=keywords["threads"],
            pace=keywords["pace"],
            lock_timeout=keywords["lock_timeout"],
            should_stop=effort.should_stop,
        )
