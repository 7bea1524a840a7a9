"""The operations behind every entry point: archiver calls wrapped with locks, logs and metrics.

The CLI, the scheduler and the control socket all run backups, verifies, restores and prunes
through these functions, so each gets the same per-database locking, the same log events and
the same metrics whichever way it was asked for.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog

from backup_sidecar import archiver
from backup_sidecar.archiver import ArchiveInfo, DatabaseSpec, ProgressFn
from backup_sidecar.errors import (
    BackupDirError,
    BusyError,
    CorruptArchiveError,
    SidecarError,
    UnknownDatabaseError,
    UnknownPolicyError,
    UnknownPrunePolicyError,
    UnsafeEntryError,
    UsageError,
)

log = structlog.get_logger("backup_sidecar.jobs")

#: The policy of a backup asked for without one (CLI `backup`, socket `backup`).
MANUAL_POLICY = "manual"


class JobMetrics(Protocol):
    """What the jobs report; the daemon's Metrics implements it, the CLI passes None."""

    def backup_finished(
        self,
        policy: str,
        *,
        ok: bool,
        duration_s: float,
        size_bytes: int | None,
        finished_at: datetime,
        snapshot_seconds: Mapping[str, float] | None = None,
        busy: bool = False,
    ) -> None: ...
    def prune_finished(self, policy: str, *, deleted: int, errors: int) -> None: ...
    def restore_finished(self, *, ok: bool, finished_at: datetime, busy: bool = False) -> None: ...
    def scrub_finished(self, *, ok: bool, finished_at: datetime) -> None: ...


@dataclass(frozen=True)
class Runtime:
    """Plain fields the jobs need, mapped from the settings by the command layer."""

    backup_dir: Path
    databases: Mapping[str, DatabaseSpec]
    keep: Mapping[str, int]
    policy_databases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    level: int = archiver.DEFAULT_LEVEL
    #: Threads for a backup's integrity check and compression (1: one after the other), and
    #: whether the compression yields its CPU while the check runs (backup_sidecar.cpus).
    threads: int = 1
    pace: bool = False
    nice: int = 0
    lock_timeout: float = 30.0
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def backup_policies(self) -> tuple[str, ...]:
        """The policies a backup asked for by a user may go under: ``manual`` and every
        configured one except ``pre_restore``, which only restores write."""
        named = (p for p in self.keep if p != archiver.PRE_RESTORE_POLICY)
        return tuple(dict.fromkeys((MANUAL_POLICY, *named)))

    def check_backup_policy(self, policy: str) -> None:
        """Refuse a policy outside `backup_policies`: its archives would never be pruned."""
        if policy not in self.backup_policies():
            raise UnknownPolicyError(policy, self.backup_policies())

    def select(
        self, names: Sequence[str] | None, *, policy: str | None = None
    ) -> list[DatabaseSpec]:
        """The databases named (default: the policy's, else all), refusing unknown names."""
        chosen = list(names or self.policy_databases.get(policy or "", ()) or self.databases)
        for name in chosen:
            if name not in self.databases:
                raise UnknownDatabaseError(name, tuple(self.databases))
        return [self.databases[name] for name in dict.fromkeys(chosen)]


def archive_json(a: ArchiveInfo) -> dict[str, Any]:
    """One archive as both `list --json` and the socket's `list` show it."""
    return {
        "name": a.name,
        "path": str(a.path),
        "created_at": a.created_at.isoformat(),
        "size_bytes": a.size_bytes,
        "databases": list(a.databases),
        "policy": a.policy,
        "status": a.status.value,
        "verified": a.status is archiver.ArchiveStatus.VERIFIED,
        "error": a.error,
        "sequence": a.sequence,
    }


def listing(rt: Runtime, catalog: archiver.Catalog | None) -> list[ArchiveInfo]:
    """The backup directory's archives, newest first: from the daemon's catalog, rescanned now
    (only new or changed archives are read), or for the CLI, one listing of the directory."""
    if catalog is None:
        return archiver.list_archives(rt.backup_dir)
    return list(catalog.refresh().archives)


def lower_priority(nice: int) -> None:
    """Make the calling thread (and the threads it starts, which inherit it) yield the CPU to
    the application: with both cores busy checking and compressing, an unniced backup raised a
    200 commits/s writer's p99 commit latency about threefold. Linux niceness is per thread;
    it is only ever raised here, so a daemon's worker threads stay niced."""
    tid = threading.get_native_id()
    if nice > os.getpriority(os.PRIO_PROCESS, tid):
        os.setpriority(os.PRIO_PROCESS, tid, nice)


def refuse_unsafe_entries(rt: Runtime) -> None:
    """UnsafeEntryError naming the first planted link or foreign file among the backup
    directory's own entries; a missing or unreadable directory is left for the operation
    itself to report."""
    try:
        archiver.check_backup_dir(rt.backup_dir)
    except UnsafeEntryError:
        raise
    except OSError:
        pass


def clean_leftovers(rt: Runtime) -> None:
    """Remove what crashed operations left behind (only what no live process holds).

    Best effort: a directory this process cannot read is left for the operation itself to
    report, with the error that names it. A planted link or foreign file among the backup
    directory's own entries is refused first (UnsafeEntryError), before anything is removed.
    """
    refuse_unsafe_entries(rt)
    try:
        removed = archiver.clean_leftovers(rt.backup_dir) if rt.backup_dir.is_dir() else []
        removed += archiver.clean_restore_leftovers(list(rt.databases.values()))
    except OSError as exc:
        log.warning("leftover_cleanup_failed", error=str(exc))
        return
    for path in removed:
        log.warning("leftover_removed", path=str(path))
    for path in archiver.rescued_content(rt.backup_dir):
        log.error(
            "pre_restore_content_kept",
            path=str(path),
            reason="a restore could not archive the content it replaced; move it out by hand",
        )


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


def failure_text(exc: BaseException) -> str:
    """One line for a failed job: the sidecar's own message, or a bug's type and message."""
    return str(exc) if isinstance(exc, SidecarError) else f"{type(exc).__name__}: {exc}"


def run_prune(
    rt: Runtime,
    *,
    policies: Sequence[str] | None = None,
    keep: int | None = None,
    dry_run: bool = False,
    wait: float | None = None,
    metrics: JobMetrics | None = None,
    spare: Collection[str] = (),
    checks: archiver.ReadCheckCache | None = None,
    catalog: archiver.Catalog | None = None,
) -> archiver.PruneResult:
    """Apply retention (``keep`` overrides the policies' own counts) and report what went.

    Archives named in ``spare`` are never deleted: the daemon spares the backup it just wrote
    (retention orders by creation sequence, so it is the newest anyway; an archive of an older
    version, without one, would otherwise be judged by its wall-clock time).

    Before anything is deleted, the archive each policy relies on (its newest verified one) is
    read to the end (readcheck.py); one that fails is marked damaged (not with ``dry_run``) and
    the next one is tried. ``checks`` carries results between prunes (the daemon keeps one);
    without it every prune reads again.
    """
    if keep is not None and keep < 0:
        raise UsageError(f"--keep must be >= 0, got {keep}")
    refuse_unsafe_entries(rt)
    archives = listing(rt, catalog)
    present = {a.policy for a in archives}
    known = sorted(present | set(rt.keep) | {MANUAL_POLICY})
    for policy in policies or ():
        if policy not in known:  # a typo would otherwise say "nothing to delete", exit 0
            raise UnknownPrunePolicyError(policy, known)
    chosen = list(policies) if policies else sorted(present | set(rt.keep))
    keep_map = {
        p: keep
        if keep is not None and (policies or p != archiver.PRE_RESTORE_POLICY)
        else rt.keep.get(p, -1)
        for p in chosen
    }
    keep_map = {p: k for p, k in keep_map.items() if k >= 0}
    checks = checks if checks is not None else archiver.ReadCheckCache()
    damaged: list[tuple[ArchiveInfo, str]] = []

    def good(archive: ArchiveInfo) -> bool:
        try:
            fault = checks.check(archive.path)
        except FileNotFoundError:
            return False  # gone meanwhile: nothing to rely on, nothing to mark
        if fault is None:
            return True
        damaged.append((archive, fault))
        if not dry_run:
            mark_damaged(rt, archive, fault, found_by="prune")
        return False

    expired = archiver.select_expired(archives, keep=keep_map, policies=chosen, good=good)
    expired = [a for a in expired if a.name not in spare]
    if dry_run:
        return archiver.PruneResult(deleted=expired, damaged=damaged)
    with archiver.database_locks(rt.backup_dir, list(rt.databases), wait=wait):
        result = archiver.delete_archives(expired)
    result.damaged.extend(damaged)
    for policy in chosen:
        deleted = sum(1 for a in result.deleted if a.policy == policy)
        errors = sum(1 for a, _ in result.failed if a.policy == policy)
        if metrics:
            metrics.prune_finished(policy, deleted=deleted, errors=errors)
    for archive in result.deleted:
        log.info("archive_pruned", archive=archive.name, policy=archive.policy)
    for archive, error in result.failed:
        log.error("prune_failed", archive=archive.name, policy=archive.policy, error=error)
    return result


def mark_damaged(rt: Runtime, archive: ArchiveInfo, fault: str, *, found_by: str) -> None:
    """Write the archive's damage marker and log it; a marker that cannot be written is logged
    (the archive is still treated as damaged by the operation that found it)."""
    try:
        archiver.mark_damaged(archive.path, reason=fault, found_by=found_by, now=rt.clock())
    except OSError as exc:
        log.error("damage_marker_failed", archive=archive.name, error=exc.strerror or str(exc))
    log.error(
        "archive_damaged",
        archive=archive.name,
        policy=archive.policy,
        reason=fault,
        found_by=found_by,
    )


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
    metrics: JobMetrics | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    catalog: archiver.Catalog | None = None,
) -> ScrubReport:
    """Read every archive to its end (the read check, never the cache's old answer) and mark
    the ones that fail damaged; markers whose archive was deleted are removed."""
    lower_priority(rt.nice)
    checks = checks if checks is not None else archiver.ReadCheckCache()
    report = progress or (lambda stage, done, total: None)
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
                fault = checks.recheck(archive.path, should_stop=should_stop)
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
    except Exception as exc:  # every failure counts, not only the ones the archiver names
        log.error("scrub_failed", error=failure_text(exc))
        if metrics:
            metrics.scrub_finished(ok=False, finished_at=rt.clock())
        if isinstance(exc, OSError) and not isinstance(exc, SidecarError):
            where = f" ({exc.filename})" if exc.filename else ""
            raise BackupDirError(rt.backup_dir, f"scrub failed: {exc.strerror}{where}") from exc
        raise
    log.info(
        "scrub_completed",
        passed=len(passed),
        damaged=[name for name, _ in damaged],
        skipped=len(skipped),
    )
    if metrics:
        metrics.scrub_finished(ok=True, finished_at=rt.clock())
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


def run_verify(
    rt: Runtime,
    ref: str,
    *,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Verify one archive completely; returns a summary, raises CorruptArchiveError on a fault."""
    lower_priority(rt.nice)
    path = archiver.resolve_archive(rt.backup_dir, ref)
    refuse_unsafe_entries(rt)
    with archiver.staging_area(rt.backup_dir, purpose="verify") as area:
        verified = archiver.verify_archive(
            path, staging=area, progress=progress, should_stop=should_stop
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


def run_restore(
    rt: Runtime,
    ref: str,
    *,
    names: Sequence[str] | None = None,
    dry_run: bool = False,
    wait: float | None = None,
    metrics: JobMetrics | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    catalog: archiver.Catalog | None = None,
) -> archiver.RestoreResult:
    """Verify, save, and restore into the live databases, holding their locks throughout."""
    lower_priority(rt.nice)
    path = archiver.resolve_archive(rt.backup_dir, ref)
    clean_leftovers(rt)
    manifest = archiver.read_manifest(path)
    targets = list(names) if names else [n for n in manifest.members() if n in rt.databases]
    rt.select(targets)
    try:
        with archiver.database_locks(rt.backup_dir, targets, wait=wait, should_stop=should_stop):
            result = archiver.restore_archive(
                path,
                databases=rt.databases,
                selected=targets,
                backup_dir=rt.backup_dir,
                now=rt.clock(),
                dry_run=dry_run,
                level=rt.level,
                threads=rt.threads,
                pace=rt.pace,
                lock_timeout=rt.lock_timeout,
                progress=progress,
                should_stop=should_stop,
            )
    except SidecarError as exc:
        log.error("restore_failed", archive=path.name, error=str(exc))
        if metrics and not dry_run:
            metrics.restore_finished(
                ok=False, finished_at=rt.clock(), busy=isinstance(exc, BusyError)
            )
        raise
    if not dry_run:
        log.info(
            "restore_completed",
            archive=result.archive,
            restored=list(result.restored),
            pre_restore_archive=result.pre_restore_archive,
            damaged=list(result.damaged),
        )
        if metrics:
            metrics.restore_finished(ok=True, finished_at=rt.clock())
        if result.pre_restore_archive:
            prune_after_backup(
                rt,
                policy=archiver.PRE_RESTORE_POLICY,
                just_written=result.pre_restore_archive,
                metrics=metrics,
                catalog=catalog,
            )
    return result


def prune_after_backup(
    rt: Runtime,
    *,
    policy: str,
    just_written: str,
    metrics: JobMetrics | None,
    checks: archiver.ReadCheckCache | None = None,
    catalog: archiver.Catalog | None = None,
) -> None:
    """Apply ``policy``'s keep after the daemon wrote one of its archives: a scheduled backup,
    a socket backup into the policy, or a restore's `pre_restore` safety backup (they would
    pile up: no schedule ever prunes that policy). Never deletes the one just written; a
    failure is logged and counted, never a failed backup (the next one prunes again). A policy
    without a keep (``manual``) is left as it is."""
    if policy not in rt.keep:
        return
    try:
        run_prune(
            rt,
            policies=[policy],
            metrics=metrics,
            wait=60.0,
            spare=[just_written],
            checks=checks,
            catalog=catalog,
        )
    except (SidecarError, OSError) as exc:  # e.g. the backup directory just vanished
        log.error("prune_failed", policy=policy, error=str(exc))
        if metrics:
            metrics.prune_finished(policy, deleted=0, errors=1)


def restore_json(result: archiver.RestoreResult) -> dict[str, Any]:
    """A restore's result as the CLI's --json and the control socket give it."""
    return {
        "archive": result.archive,
        "dry_run": result.dry_run,
        "restored": list(result.restored),
        "pre_restore_archive": result.pre_restore_archive,
        "damaged": list(result.damaged),
        "plan": list(result.plan),
    }


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
    should_stop: Callable[[], bool] = lambda: False,
    catalog: archiver.Catalog | None = None,
) -> DrillReport:
    """Restore the newest verified archive into a scratch area (never a live database) and
    compare every table's row count with what the archive's metadata promised (read from that
    one archive: a listing keeps no row counts)."""
    lower_priority(rt.nice)
    from backup_sidecar.archiver.sqlitefacts import collect_facts  # noqa: PLC0415

    candidates = [
        a
        for a in listing(rt, catalog)
        if a.status is archiver.ArchiveStatus.VERIFIED and a.policy != archiver.PRE_RESTORE_POLICY
    ]
    if not candidates:
        raise UsageError(f"restore drill: no verified archive in {rt.backup_dir}")
    newest = candidates[0]
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
                level=rt.level,
                threads=rt.threads,
                pace=rt.pace,
                lock_timeout=rt.lock_timeout,
                should_stop=should_stop,
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
