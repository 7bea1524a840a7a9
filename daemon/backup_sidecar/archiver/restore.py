"""Restore INTO live databases through SQLite, after proving the archive; nothing is lost.

Order: verify the archive (databases staged), plan and pre-check every target (page size,
free space), then write every live database in one write transaction each, all locks taken
before any write (backup_sidecar.archiver.livewrite): inside those transactions the content
each write replaces is saved to a fsynced file, so not one committed transaction is missed,
and then every copy commits. The saved content becomes the ``pre_restore`` safety archive,
verified; a live database that fails integrity_check is saved as it is, in an archive marked
damaged. Connections the application holds open see the restored content at their next
transaction, and a crash or a full disk rolls the write back. Live files, ``-wal``, ``-shm``
and ``-journal`` are never renamed, copied over or deleted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

from backup_sidecar.archiver.backup import DEFAULT_LEVEL
from backup_sidecar.archiver.livecopy import LiveWrite
from backup_sidecar.archiver.livewrite import write_locked
from backup_sidecar.archiver.model import (
    DEFAULT_LIMITS,
    DatabaseSpec,
    Limits,
    ProgressFn,
    RestoreResult,
)
from backup_sidecar.archiver.newdatabase import create_new
from backup_sidecar.archiver.preimage import Captured
from backup_sidecar.archiver.prerestore import new_rescue_dir, remove_rescue, safety_archive
from backup_sidecar.archiver.restoreplan import (
    Live,
    Target,
    check_space,
    describe,
    plan_targets,
    predict_damage,
)
from backup_sidecar.archiver.staging import ensure_backup_dir, staging_area
from backup_sidecar.archiver.verify import VerifiedArchive, verify_archive
from backup_sidecar.errors import (
    OperationAbortedError,
    SidecarError,
    WriteIncompleteError,
)


def restore_archive(
    path: Path,
    *,
    databases: Mapping[str, DatabaseSpec],
    selected: Sequence[str] | None,
    backup_dir: Path,
    now: datetime,
    dry_run: bool = False,
    level: int = DEFAULT_LEVEL,
    threads: int = 2,
    pace: bool = False,
    lock_timeout: float = 30.0,
    limits: Limits = DEFAULT_LIMITS,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> RestoreResult:
    """Restore ``selected`` databases (default: all in the archive) from the archive at ``path``:
    all of them or, if anything fails before the first commit, none."""
    ensure_backup_dir(backup_dir)
    with staging_area(backup_dir, purpose="restore") as area:
        verified = verify_archive(
            path, staging=area, limits=limits, progress=progress, should_stop=should_stop
        )
        return restore_verified(
            verified,
            area=area,
            databases=databases,
            selected=selected,
            backup_dir=backup_dir,
            now=now,
            dry_run=dry_run,
            level=level,
            threads=threads,
            pace=pace,
            lock_timeout=lock_timeout,
            should_stop=should_stop,
        )


def restore_verified(
    verified: VerifiedArchive,
    *,
    area: Path,
    databases: Mapping[str, DatabaseSpec],
    selected: Sequence[str] | None,
    backup_dir: Path,
    now: datetime,
    dry_run: bool = False,
    level: int = DEFAULT_LEVEL,
    threads: int = 2,
    pace: bool = False,
    lock_timeout: float = 30.0,
    should_stop: Callable[[], bool] = lambda: False,
) -> RestoreResult:
    """The restore of databases already verified and staged in the staging area ``area``
    (a verified archive's, or an incremental backup's rebuilt and checked images)."""
    targets = plan_targets(verified, databases=databases, selected=selected)
    plan = [describe(verified.name, t) for t in targets]
    check_space(targets, backup_dir=backup_dir)
    if dry_run:
        return _dry_run(verified.name, targets, plan, area=area, lock_timeout=lock_timeout)
    for t in targets:
        _prepare_staged(t.staged)
    if should_stop():
        raise OperationAbortedError(f"restore of {verified.name!r}")
    existing = [t for t in targets if t.live is not Live.MISSING]
    rescue = new_rescue_dir(backup_dir, now)
    try:
        captured, failure = _write(
            existing, rescue=rescue, lock_timeout=lock_timeout, should_stop=should_stop
        )
    except BaseException:
        remove_rescue(rescue)  # nothing was committed, nothing was replaced
        raise
    written = [c.name for c in captured]
    if failure is None:
        try:
            for t in targets:
                if t.live is Live.MISSING:
                    create_new(t)
                    written.append(t.spec.name)
        except SidecarError as exc:
            failure = exc
    safety, damaged = safety_archive(
        captured,
        databases=databases,
        rescue=rescue,
        backup_dir=backup_dir,
        now=now,
        written=written,
        failure=failure,
        options={"level": level, "threads": threads, "pace": pace},
        should_stop=should_stop,
    )
    return RestoreResult(
        verified.name,
        tuple(t.spec.name for t in targets),
        safety,
        dry_run=False,
        plan=tuple(plan),
        damaged=damaged,
    )


def _dry_run(
    archive: str, targets: Sequence[Target], plan: list[str], *, area: Path, lock_timeout: float
) -> RestoreResult:
    """What the restore would do, with the live databases it would save although damaged."""
    predicted = []
    for t in targets:
        why = predict_damage(t, area=area, lock_timeout=lock_timeout)
        if why:
            predicted.append(f"{t.spec.name}: {why}")
            plan.append(
                f"the live {t.spec.name!r} fails {why}: it will be saved as it is, in a "
                "pre_restore archive marked damaged, and then replaced"
            )
    if any(t.live is Live.DATABASE for t in targets):
        plan.append("first save the content every replaced database holds (pre_restore)")
    return RestoreResult(
        archive, (), None, dry_run=True, plan=tuple(plan), damaged=tuple(predicted)
    )


def _write(
    existing: Sequence[Target],
    *,
    rescue: Path,
    lock_timeout: float,
    should_stop: Callable[[], bool],
) -> tuple[list[Captured], SidecarError | None]:
    """Write every existing live database; (what each held before, a failure after a commit)."""
    if not existing:
        return [], None
    jobs = [LiveWrite(t.spec.name, t.spec.path, t.staged, rescue / t.spec.member) for t in existing]
    try:
        captured = write_locked(jobs, lock_timeout=lock_timeout, should_stop=should_stop)
    except WriteIncompleteError as exc:
        cause = exc.cause
        error = cause if isinstance(cause, SidecarError) else SidecarError(str(cause))
        return list(exc.committed), _with_name(error, exc.failed)
    return captured, None


def _with_name(error: SidecarError, name: str) -> SidecarError:
    return error if name in str(error) else SidecarError(f"database {name!r}: {error}")


def _prepare_staged(staged: Path) -> None:
    """Make the staged copy a rollback-journal database of at least two pages.

    The backup API copies page 1 as it is: a staged copy whose header says WAL (a seed archive
    made from a WAL database) would switch a rollback-journal live database to WAL. The write
    runs in steps of fewer pages than the copy has, so that it is locked before it commits."""
    conn = sqlite3.connect(staged)
    try:
        conn.execute("PRAGMA journal_mode=DELETE").fetchone()
        if conn.execute("PRAGMA page_count").fetchone()[0] < 2:
            conn.execute("CREATE TABLE sidecar_pad_ (x)")
            conn.execute("DROP TABLE sidecar_pad_")  # leaves one free page: the same content
            conn.commit()
    finally:
        conn.close()
