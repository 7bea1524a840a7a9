"""Restore INTO live databases through SQLite, after proving the archive and saving what is there.

Order: verify the archive (databases staged), plan and pre-check every target (page size,
free space), take a verified ``pre_restore`` safety backup of every live database that will
be replaced, then copy each staged database into its live file with the backup API in one
step. That step is one write transaction under SQLite's own locks: connections the
application holds open see the restored content at their next transaction, and a crash or a
full disk rolls it back. Live files, ``-wal``, ``-shm`` and ``-journal`` are never renamed,
copied over or deleted.
"""

from __future__ import annotations

import glob
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from backup_sidecar.archiver import manifest as mf
from backup_sidecar.archiver.backup import DEFAULT_LEVEL, create_backup
from backup_sidecar.archiver.model import (
    DEFAULT_LIMITS,
    DatabaseSpec,
    Limits,
    ProgressFn,
    RestoreResult,
)
from backup_sidecar.archiver.sqlitefacts import (
    BUSY_SLICE_S,
    LockDeadlineError,
    connect_readonly,
    copy_in_one_step,
    has_sqlite_header,
    page_geometry,
)
from backup_sidecar.archiver.staging import (
    create_exclusive,
    ensure_backup_dir,
    free_bytes,
    fsync_dir,
    staging_area,
)
from backup_sidecar.archiver.verify import VerifiedArchive, verify_archive
from backup_sidecar.errors import (
    DatabaseError,
    DatabaseLockedError,
    InsufficientSpaceError,
    OperationAbortedError,
    RestoreRefusedError,
    UnknownDatabaseError,
)

PRE_RESTORE_POLICY = "pre_restore"
_SPACE_MARGIN = 8 << 20


@dataclass(frozen=True)
class _Target:
    spec: DatabaseSpec
    staged: Path
    exists: bool


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
    """Restore ``selected`` databases (default: all in the archive) from the archive at ``path``."""
    ensure_backup_dir(backup_dir)
    with staging_area(backup_dir, purpose="restore") as area:
        verified = verify_archive(
            path, staging=area, limits=limits, progress=progress, should_stop=should_stop
        )
        targets = _plan(verified, databases=databases, selected=selected)
        plan = tuple(_describe(verified, t) for t in targets)
        for target in targets:
            _precheck(target, lock_timeout=lock_timeout)
        _check_space(targets, backup_dir=backup_dir)
        if dry_run:
            return RestoreResult(verified.name, (), None, dry_run=True, plan=plan)
        safety = _safety_backup(
            [t.spec for t in targets if t.exists],
            backup_dir=backup_dir,
            now=now,
            level=level,
            threads=threads,
            pace=pace,
            lock_timeout=lock_timeout,
            progress=progress,
            should_stop=should_stop,
        )
        if should_stop():
            raise OperationAbortedError(f"restore of {verified.name!r}")
        for target in targets:
            _restore_one(target, lock_timeout=lock_timeout)
    return RestoreResult(
        verified.name, tuple(t.spec.name for t in targets), safety, dry_run=False, plan=plan
    )


def _plan(
    verified: VerifiedArchive,
    *,
    databases: Mapping[str, DatabaseSpec],
    selected: Sequence[str] | None,
) -> list[_Target]:
    in_archive = list(verified.manifest.members())
    names = list(dict.fromkeys(selected)) if selected else in_archive
    targets = []
    for name in names:
        if name not in databases:
            raise UnknownDatabaseError(name, tuple(databases))
        if name not in in_archive:
            raise RestoreRefusedError(
                f"archive {verified.name!r} does not contain database {name!r} "
                f"(it has: {', '.join(in_archive)})"
            )
        spec = databases[name]
        targets.append(_Target(spec, verified.staged[name], exists=spec.path.exists()))
    return targets


def _describe(verified: VerifiedArchive, target: _Target) -> str:
    how = "replace the content of" if target.exists else "create"
    return f"{how} {target.spec.name!r} at {target.spec.path} from {verified.name!r}"


def _precheck(target: _Target, *, lock_timeout: float) -> None:
    """Refuse, before anything changes, a target that cannot take the staged database."""
    spec = target.spec
    if not target.exists:
        if not spec.path.parent.is_dir():
            raise DatabaseError(spec.name, spec.path, "its directory does not exist")
        return
    if spec.path.is_dir():
        raise DatabaseError(spec.name, spec.path, "is a directory, not a database file")
    if spec.path.stat().st_size and not has_sqlite_header(spec.path):
        raise DatabaseError(spec.name, spec.path, "is not an SQLite database; refusing to write")
    if spec.path.stat().st_size == 0:
        return
    live_page, live_mode = page_geometry(spec.path, timeout=lock_timeout)
    staged_page, _ = page_geometry(target.staged, timeout=lock_timeout)
    if live_mode == "wal" and live_page != staged_page:
        raise RestoreRefusedError(
            f"database {spec.name!r} ({spec.path}) is in WAL mode with page size {live_page}, "
            f"the archive's copy has page size {staged_page}; SQLite cannot restore across "
            "page sizes into a WAL database (switch it to journal_mode=DELETE first)"
        )


def _check_space(targets: Sequence[_Target], *, backup_dir: Path) -> None:
    """The pre-restore backup needs its snapshot and archive; each live directory needs room
    for the WAL or rollback journal the restore writes."""
    live_total = sum(t.spec.path.stat().st_size for t in targets if t.exists)
    need = 2 * live_total + _SPACE_MARGIN
    free = free_bytes(backup_dir)
    if need > free:
        raise InsufficientSpaceError(backup_dir, need, free, "the pre-restore safety backup")
    by_dir: dict[Path, int] = {}
    for t in targets:
        old = t.spec.path.stat().st_size if t.exists else 0
        by_dir[t.spec.path.parent] = by_dir.get(t.spec.path.parent, 0) + max(
            old, t.staged.stat().st_size
        )
    for directory, needed in by_dir.items():
        free = free_bytes(directory)
        if needed + _SPACE_MARGIN > free:
            raise InsufficientSpaceError(directory, needed + _SPACE_MARGIN, free, "the restore")


def _safety_backup(
    specs: Sequence[DatabaseSpec],
    *,
    backup_dir: Path,
    now: datetime,
    level: int,
    threads: int,
    pace: bool,
    lock_timeout: float,
    progress: ProgressFn | None,
    should_stop: Callable[[], bool],
) -> str | None:
    """Back up the live databases about to be replaced, and prove the archive restores."""
    if not specs:
        return None
    archive = create_backup(
        specs,
        backup_dir=backup_dir,
        name=mf.default_name(PRE_RESTORE_POLICY, now),
        unique=True,
        policy=PRE_RESTORE_POLICY,
        now=now,
        level=level,
        threads=threads,
        pace=pace,
        lock_timeout=lock_timeout,
        progress=progress,
        should_stop=should_stop,
    )
    # integrity_check ran on these exact bytes while the archive was written; the checksums
    # prove the archive holds them.
    with staging_area(backup_dir, purpose="verify") as area:
        verify_archive(archive.path, staging=area, integrity=False, should_stop=should_stop)
    return archive.name


def _restore_one(target: _Target, *, lock_timeout: float) -> None:
    # The backup API copies page 1 as it is: a staged copy whose header says WAL (a seed archive
    # made from a WAL database) would switch a rollback-journal live database to WAL.
    _to_rollback_journal(target.staged)
    if not target.exists:
        _create_new(target)
        return
    spec = target.spec
    deadline = time.monotonic() + lock_timeout
    src = connect_readonly(target.staged)
    try:
        dst = sqlite3.connect(spec.path, timeout=BUSY_SLICE_S)
        try:
            copy_in_one_step(src, dst, deadline=deadline, clock=time.monotonic)
        finally:
            dst.close()
    except LockDeadlineError:
        raise DatabaseLockedError(spec.name, spec.path, lock_timeout) from None
    except sqlite3.Error as exc:
        raise DatabaseError(
            spec.name, spec.path, f"restore failed and was rolled back: {exc}"
        ) from exc
    finally:
        src.close()


def _to_rollback_journal(staged: Path) -> None:
    conn = sqlite3.connect(staged)
    try:
        conn.execute("PRAGMA journal_mode=DELETE").fetchone()
    finally:
        conn.close()


def _new_file_tmp(path: Path, pid: int) -> Path:
    return path.parent / f".{path.name}.restore-{pid}"


def clean_restore_leftovers(specs: Sequence[DatabaseSpec]) -> list[Path]:
    """Remove half-written new databases of restores whose process died (never a live file)."""
    removed = []
    for spec in specs:
        if not spec.path.parent.is_dir():
            continue
        # Escaped: a file name may hold glob characters ("data[1].db").
        for tmp in spec.path.parent.glob(f".{glob.escape(spec.path.name)}.restore-*"):
            pid = tmp.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


def _create_new(target: _Target) -> None:
    """A database that does not exist yet is created whole, by an atomic link."""
    spec = target.spec
    tmp = _new_file_tmp(spec.path, os.getpid())
    try:
        with (
            os.fdopen(create_exclusive(tmp, mode=0o644), "wb") as out,
            target.staged.open("rb") as src,
        ):
            while chunk := src.read(1 << 20):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, spec.path)
        except FileExistsError:
            raise RestoreRefusedError(
                f"database {spec.name!r} appeared at {spec.path} during the restore; run it again"
            ) from None
        fsync_dir(spec.path.parent)
    finally:
        tmp.unlink(missing_ok=True)
