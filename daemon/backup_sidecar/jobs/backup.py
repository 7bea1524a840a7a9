"""The backup job: one archive of the selected databases, under their locks."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import structlog

from backup_sidecar import archiver
from backup_sidecar.archiver import ArchiveInfo, ProgressFn
from backup_sidecar.errors import BusyError
from backup_sidecar.jobs.backupdir import clean_leftovers
from backup_sidecar.jobs.effort import lower_priority
from backup_sidecar.jobs.outcomes import JobMetrics, failure_text
from backup_sidecar.jobs.runtime import Runtime

log = structlog.get_logger(__name__)


def run_backup(
    rt: Runtime,
    *,
    policy: str,
    names: Sequence[str] | None = None,
    archive_name: str | None = None,
    wait: float | None = None,
    metrics: JobMetrics | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> ArchiveInfo:
    """One backup of the selected databases under their locks; logged and counted either way."""
    lower_priority(rt.nice)
    specs = rt.select(names, policy=policy)
    now = rt.clock()
    name = archive_name or archiver.default_name(policy, now)
    started = time.monotonic()
    bound = log.bind(policy=policy, databases=[s.name for s in specs])
    try:
        clean_leftovers(rt)
        with archiver.database_locks(
            rt.backup_dir, [s.name for s in specs], wait=wait, should_stop=should_stop
        ):
            info = archiver.create_backup(
                specs,
                backup_dir=rt.backup_dir,
                name=name,
                policy=policy,
                now=now,
                unique=archive_name is None,
                level=rt.level,
                threads=rt.threads,
                pace=rt.pace,
                lock_timeout=rt.lock_timeout,
                progress=progress,
                should_stop=should_stop,
            )
    except Exception as exc:  # every failure counts, not only the ones the archiver names
        duration = time.monotonic() - started
        error = failure_text(exc)
        bound.error("backup_failed", archive=name, error=error, duration_s=round(duration, 3))
        if metrics:
            metrics.backup_finished(
                policy,
                ok=False,
                duration_s=duration,
                size_bytes=None,
                finished_at=rt.clock(),
                busy=isinstance(exc, BusyError),
            )
        raise
    duration = time.monotonic() - started
    locks = {
        db: e.snapshot_seconds
        for db, e in (info.manifest.databases.items() if info.manifest else ())
        if e.snapshot_seconds is not None
    }
    if metrics:  # before the log line: whoever reads `backup_completed` finds it counted
        metrics.backup_finished(
            policy,
            ok=True,
            duration_s=duration,
            size_bytes=info.size_bytes,
            finished_at=rt.clock(),
            snapshot_seconds=locks,
        )
    bound.info(
        "backup_completed",
        archive=info.name,
        size_bytes=info.size_bytes,
        duration_s=round(duration, 3),
        snapshot_lock_s=locks,
    )
    return info
