"""The restore drill: the newest verified archive (or incremental backup) restored into
scratch and its row counts compared with what it promised."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from backup_sidecar import archiver
from backup_sidecar.archiver import DatabaseSpec
from backup_sidecar.errors import CorruptArchiveError, SidecarError, UsageError
from backup_sidecar.jobs.backupdir import listing, mark_damaged
from backup_sidecar.jobs.effort import Effort
from backup_sidecar.jobs.outcomes import DrillFinished, Outcomes
from backup_sidecar.jobs.pagecheck import with_incremental
from backup_sidecar.jobs.pagescrub import recheck_page_backup
from backup_sidecar.jobs.pagestores import find_page_backup
from backup_sidecar.jobs.runtime import Runtime

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class DrillReport:
    archive: str
    databases: tuple[str, ...]
    mismatches: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.mismatches


def run_drill(
    rt: Runtime,
    *,
    effort: Effort | None = None,
    outcomes: Outcomes | None = None,
    catalog: archiver.Catalog | None = None,
) -> DrillReport:
    """Restore the newest verified archive into a scratch area (never a live database) and
    compare every table's row count with what the archive's metadata promised (read from that
    one archive: a listing keeps no row counts). Published either way, unless a bug's
    exception escapes."""
    effort = effort or rt.effort
    effort.lower_priority()
    try:
        report = _drill(rt, effort, catalog)
    except SidecarError as exc:
        if outcomes:
            outcomes.publish(DrillFinished(finished_at=rt.clock(), error=str(exc)))
        raise
    if outcomes:
        outcomes.publish(
            DrillFinished(
                finished_at=rt.clock(),
                archive=report.archive,
                error="; ".join(report.mismatches) or None,
            )
        )
    return report


def _drill(rt: Runtime, effort: Effort, catalog: archiver.Catalog | None) -> DrillReport:
    from backup_sidecar.archiver.sqlitefacts import collect_facts  # noqa: PLC0415

    candidates = [
        a
        for a in with_incremental(rt, listing(rt, catalog))
        if a.policy != archiver.PRE_RESTORE_POLICY
        and (
            a.status is archiver.ArchiveStatus.VERIFIED
            or (a.kind == "incremental" and a.status is archiver.ArchiveStatus.UNVERIFIED)
        )
    ]
    if not candidates:
        raise UsageError(f"restore drill: no verified archive in {rt.backup_dir}")
    newest = candidates[0]
    if newest.kind == "incremental":
        return _drill_pages(rt, effort, newest.name)
    try:
        manifest = archiver.read_manifest(newest.path)
    except CorruptArchiveError as exc:
        mark_damaged(rt, newest, f"restore drill: {exc.fault}", found_by="drill")
        raise
    with archiver.staging_area(rt.backup_dir, purpose="drill") as scratch:
        scratch_specs = {
            name: DatabaseSpec(name=name, path=scratch / entry.file, member=entry.file)
            for name, entry in manifest.databases.items()
        }
        try:
            archiver.restore_archive(
                newest.path,
                databases=scratch_specs,
                selected=None,
                backup_dir=rt.backup_dir,
                now=rt.clock(),
                **effort.archiver_keywords(),
            )
        except CorruptArchiveError as exc:
            mark_damaged(rt, newest, f"restore drill: {exc.fault}", found_by="drill")
            raise
        mismatches = []
        for name, spec in scratch_specs.items():
            counts = collect_facts(spec.path).row_counts
            expected = manifest.databases[name].row_counts
            if counts != expected:
                diff = sorted(
                    t for t in set(counts) | set(expected) if counts.get(t) != expected.get(t)
                )
                mismatches.append(f"{name}: row counts differ in {', '.join(diff[:5])}")
    report = DrillReport(newest.name, tuple(scratch_specs), tuple(mismatches))
    if not report.ok:
        mark_damaged(rt, newest, "restore drill: " + "; ".join(mismatches), found_by="drill")
    if report.ok:
        log.info("restore_drill_completed", archive=newest.name, databases=list(report.databases))
    else:
        log.error("restore_drill_failed", archive=newest.name, mismatches=list(mismatches))
    return report


def _drill_pages(rt: Runtime, effort: Effort, name: str) -> DrillReport:
    """An incremental backup drilled: every database rebuilt into scratch and checked (page and
    image SHA-256, integrity_check, schema hash and every table's row count against what it
    recorded); a failure marks it damaged and is a CorruptArchiveError naming it."""
    backup = find_page_backup(rt.backup_dir, name)
    if backup is None:
        raise UsageError(f"restore drill: incremental backup {name!r} went while it ran")
    fault = recheck_page_backup(rt, backup, found_by="drill", should_stop=effort.should_stop)
    if fault is not None:
        log.error("restore_drill_failed", archive=name, mismatches=[fault])
        raise CorruptArchiveError(name, fault)
    log.info("restore_drill_completed", archive=name, databases=list(backup.databases))
    return DrillReport(name, backup.databases, ())
