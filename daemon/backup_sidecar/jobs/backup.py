"""The backup job: one archive of the selected databases, under their locks."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence

import structlog

from backup_sidecar import archiver
from backup_sidecar.archiver import ArchiveInfo
from backup_sidecar.errors import BusyError, CorruptArchiveError, OperationAbortedError
from backup_sidecar.jobs.backupdir import clean_leftovers, mark_damaged
from backup_sidecar.jobs.effort import Effort
from backup_sidecar.jobs.incremental import incremental_backup, manifest_stats
from backup_sidecar.jobs.outcomes import BackupFinished, Outcomes, failure_text
from backup_sidecar.jobs.pagestores import page_name_taken
from backup_sidecar.jobs.runtime import Runtime

log = structlog.get_logger(__name__)


def run_backup(
    rt: Runtime,
    *,
    policy: str,
    names: Sequence[str] | None = None,
    archive_name: str | None = None,
    wait: float | None = None,
    effort: Effort | None = None,
    outcomes: Outcomes | None = None,
    scheduled: bool = False,
    checks: archiver.ReadCheckCache | None = None,
) -> ArchiveInfo:
    """One backup of the selected databases under their locks; logged and published either
    way (``scheduled``: the schedule asked for it, not a user).

    With ``checks`` (the daemon's cache) a new archive that the prune after it or the offsite
    upload would read anyway is read back once its locks are released, before the outcome is
    published (``read_back``): the prune and the upload the outcome wakes then find its check
    done, with the file's SHA-256, and do not read it again."""
    effort = effort or rt.effort
    effort.lower_priority()
    specs = rt.select(names, policy=policy)
    now = rt.clock()
    name = archive_name or archiver.default_name(policy, now)
    started = time.monotonic()
    bound = log.bind(policy=policy, databases=[s.name for s in specs])
    pages: dict[str, dict[str, int]] = {}
    try:
        clean_leftovers(rt)
        with archiver.database_locks(
            rt.backup_dir, [s.name for s in specs], wait=wait, should_stop=effort.should_stop
        ):
            if policy in rt.incremental:  # mode: incremental (the page store)
                info, manifests = incremental_backup(
                    specs,
                    backup_dir=rt.backup_dir,
                    name=name,
                    policy=policy,
                    spec=rt.incremental[policy],
                    now=now,
                    effort=effort,
                    unique=archive_name is None,
                )
                pages = manifest_stats(manifests)
            else:
                info = archiver.create_backup(
                    specs,
                    backup_dir=rt.backup_dir,
                    name=name,
                    policy=policy,
                    now=now,
                    unique=archive_name is None,
                    taken=functools.partial(page_name_taken, rt.backup_dir),
                    **effort.archiver_keywords(),
                )
        if checks is not None and _read_anyway(rt, policy):
            read_back(rt, info, checks, should_stop=effort.should_stop)
    except Exception as exc:  # every failure counts, not only the ones the archiver names
        duration = time.monotonic() - started
        error = failure_text(exc)
        bound.error("backup_failed", archive=name, error=error, duration_s=round(duration, 3))
        if outcomes:
            outcomes.publish(
                BackupFinished(
                    policy=policy,
                    archive=name,
                    finished_at=rt.clock(),
                    duration_s=duration,
                    error=error,
                    busy=isinstance(exc, BusyError),
                    scheduled=scheduled,
                )
            )
        raise
    duration = time.monotonic() - started
    locks = {
        db: e.snapshot_seconds
        for db, e in (info.manifest.databases.items() if info.manifest else ())
        if e.snapshot_seconds is not None
    }
    if outcomes:  # before the log line: whoever reads `backup_completed` finds it counted
        outcomes.publish(
            BackupFinished(
                policy=policy,
                archive=info.name,
                finished_at=rt.clock(),
                duration_s=duration,
                size_bytes=info.size_bytes,
                snapshot_seconds=locks,
                scheduled=scheduled,
                pages=pages,
            )
        )
    bound.info(
        "backup_completed",
        archive=info.name,
        size_bytes=info.size_bytes,
        duration_s=round(duration, 3),
        snapshot_lock_s=locks,
        **({"kind": "incremental", "pages": pages} if pages else {}),
    )
    return info


def _read_anyway(rt: Runtime, policy: str) -> bool:
    """True when the daemon reads ``policy``'s new archive after the backup anyway: the prune
    after it (a policy with a keep) or the offsite upload. Page-store policies write no archive."""
    return policy not in rt.incremental and (policy in rt.keep or rt.offsite is not None)


def read_back(
    rt: Runtime,
    info: ArchiveInfo,
    checks: archiver.ReadCheckCache,
    *,
    should_stop: Callable[[], bool],
) -> None:
    """The archive just written read to its end through ``checks`` (which keeps the result and
    the file's SHA-256 under its identity). One that fails is marked damaged and the backup
    fails with CorruptArchiveError; a stopped read leaves the check to the prune or upload."""
    try:
        fault = checks.check(info.path, should_stop=should_stop)
    except (FileNotFoundError, OperationAbortedError):
        return
    if fault is not None:
        mark_damaged(rt, info, fault, found_by="backup")
        raise CorruptArchiveError(info.name, fault)
