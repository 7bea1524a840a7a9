"""The verify job: one archive read and checked completely."""

from __future__ import annotations

from typing import Any

import structlog

from backup_sidecar import archiver
from backup_sidecar.jobs.backupdir import refuse_unsafe_entries
from backup_sidecar.jobs.effort import Effort
from backup_sidecar.jobs.runtime import Runtime

log = structlog.get_logger(__name__)


def run_verify(
    rt: Runtime,
    ref: str,
    *,
    effort: Effort | None = None,
) -> dict[str, Any]:
    """Verify one archive completely; returns a summary, raises CorruptArchiveError on a fault."""
    effort = effort or rt.effort
    effort.lower_priority()
    path = archiver.resolve_archive(rt.backup_dir, ref)
    refuse_unsafe_entries(rt)
    with archiver.staging_area(rt.backup_dir, purpose="verify") as area:
        verified = archiver.verify_archive(
            path, staging=area, progress=effort.progress, should_stop=effort.should_stop
        )
    for warning in verified.warnings:
        log.warning("verify_warning", archive=verified.name, warning=warning)
    log.info("archive_verified", archive=verified.name)
    return {
        "archive": verified.name,
        "path": str(path),
        "ok": True,
        "legacy": verified.manifest.legacy,
        "databases": list(verified.manifest.members()),
        "warnings": verified.warnings,
    }
