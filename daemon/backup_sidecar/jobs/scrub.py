"""The scrub job: every archive read to its end, the failing ones marked damaged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

from backup_sidecar import archiver
from backup_sidecar.errors import BackupDirError, SidecarError
from backup_sidecar.jobs.backupdir import listing, mark_damaged
from backup_sidecar.jobs.effort import Effort
from backup_sidecar.jobs.outcomes import Outcomes, ScrubFinished, failure_text
from backup_sidecar.jobs.pagescrub import scrub_pages
from backup_sidecar.jobs.runtime import Runtime

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ScrubReport:
    """What a scrub read: archives that passed, that it found damaged, and that it skipped
    (already damaged, or gone while it ran)."""

    passed: tuple[str, ...]
    damaged: tuple[tuple[str, str], ...]
    skipped: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "passed": list(self.passed),
            "damaged": [{"archive": a, "reason": r} for a, r in self.damaged],
            "skipped": list(self.skipped),
        }


def run_scrub(
    rt: Runtime,
    *,
    checks: archiver.ReadCheckCache | None = None,
    effort: Effort | None = None,
    outcomes: Outcomes | None = None,
    catalog: archiver.Catalog | None = None,
) -> ScrubReport:
    """Read every archive to its end (the read check, never the cache's old answer) and mark
    the ones that fail damaged; markers whose archive was deleted are removed. Then rebuild
    and check every incremental backup the same way (jobs/pagescrub.py)."""
    effort = effort or rt.effort
    effort.lower_priority()
    checks = checks if checks is not None else archiver.ReadCheckCache()
    report = effort.progress or (lambda stage, done, total: None)
    passed: list[str] = []
    damaged: list[tuple[str, str]] = []
    skipped: list[str] = []
    try:
        archives = listing(rt, catalog)
        for i, archive in enumerate(archives):
            report("scrub", i, len(archives))
            if archive.status is archiver.ArchiveStatus.DAMAGED:
                skipped.append(archive.name)
                continue
            try:
                fault = checks.recheck(archive.path, should_stop=effort.should_stop)
            except FileNotFoundError:
                skipped.append(archive.name)
                continue
            if fault is None:
                passed.append(archive.name)
            else:
                damaged.append((archive.name, fault))
                mark_damaged(rt, archive, fault, found_by="scrub")
        report("scrub", len(archives), len(archives))
        _remove_orphan_markers(rt)
        scrub_pages(
            rt, should_stop=effort.should_stop, passed=passed, damaged=damaged, skipped=skipped
        )
    except Exception as exc:  # every failure counts, not only the ones the archiver names
        log.error("scrub_failed", error=failure_text(exc))
        raised: Exception = exc
        if isinstance(exc, OSError) and not isinstance(exc, SidecarError):
            where = f" ({exc.filename})" if exc.filename else ""
            raised = BackupDirError(rt.backup_dir, f"scrub failed: {exc.strerror}{where}")
        if outcomes:
            outcomes.publish(ScrubFinished(finished_at=rt.clock(), error=failure_text(raised)))
        if raised is not exc:
            raise raised from exc
        raise
    log.info(
        "scrub_completed",
        passed=len(passed),
        damaged=[name for name, _ in damaged],
        skipped=len(skipped),
    )
    if outcomes:
        outcomes.publish(ScrubFinished(finished_at=rt.clock()))
    return ScrubReport(tuple(passed), tuple(damaged), tuple(skipped))


def _remove_orphan_markers(rt: Runtime) -> None:
    """The scrub's clean-up of markers whose archive is gone: an entry it cannot or will not
    remove is one warning, never a failed scrub."""
    try:
        orphans = archiver.remove_orphan_markers(rt.backup_dir)
    except OSError as exc:
        log.warning("damage_marker_cleanup_failed", error=exc.strerror or str(exc))
        return
    for path in orphans.removed:
        log.info("damage_marker_removed", path=str(path), reason="its archive is gone")
    for path, why in orphans.left:
        log.warning("damage_marker_left", path=str(path), reason=why)
