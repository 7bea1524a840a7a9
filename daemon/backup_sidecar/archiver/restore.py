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

import contextlib
import glob
import itertools
import os
import shutil
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

from backup_sidecar.archiver import manifest as mf
from backup_sidecar.archiver.backup import DEFAULT_LEVEL, create_backup
from backup_sidecar.archiver.livewrite import SAVED_MARKER, Captured, LiveWrite, write_locked
from backup_sidecar.archiver.model import (
    DEFAULT_LIMITS,
    DatabaseSpec,
    Limits,
    ProgressFn,
    RestoreResult,
)
from backup_sidecar.archiver.restoreplan import (
    Live,
    Target,
    check_space,
    describe,
    plan_targets,
    predict_damage,
)
from backup_sidecar.archiver.safefs import backup_dir_fd, open_subdir
from backup_sidecar.archiver.staging import (
    create_exclusive,
    ensure_backup_dir,
    fsync_dir,
    staging_area,
)
from backup_sidecar.archiver.verify import verify_archive
from backup_sidecar.errors import (
    BackupDirError,
    OperationAbortedError,
    RestoreIncompleteError,
    RestoreRefusedError,
    SidecarError,
    WriteIncompleteError,
)

PRE_RESTORE_POLICY = "pre_restore"
#: Where the content a restore replaced waits, fsynced, until its safety archive is published;
#: kept (never cleaned up) if that fails or the process dies first.
RESCUE_DIRNAME = ".rescue"


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
        targets = plan_targets(verified, databases=databases, selected=selected)
        plan = [describe(verified.name, t) for t in targets]
        check_space(targets, backup_dir=backup_dir)
        if dry_run:
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
                verified.name, (), None, dry_run=True, plan=tuple(plan), damaged=tuple(predicted)
            )
        for t in targets:
            _prepare_staged(t.staged)
        if should_stop():
            raise OperationAbortedError(f"restore of {verified.name!r}")
        existing = [t for t in targets if t.live is not Live.MISSING]
        rescue = _new_rescue_dir(backup_dir, now)
        try:
            captured, failure = _write(
                existing, rescue=rescue, lock_timeout=lock_timeout, should_stop=should_stop
            )
        except BaseException:
            _remove_rescue(rescue)  # nothing was committed, nothing was replaced
            raise
        written = [c.name for c in captured]
        if failure is None:
            try:
                for t in targets:
                    if t.live is Live.MISSING:
                        _create_new(t)
                        written.append(t.spec.name)
            except SidecarError as exc:
                failure = exc
        safety, damaged = _safety_archive(
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


def _safety_archive(
    captured: Sequence[Captured],
    *,
    databases: Mapping[str, DatabaseSpec],
    rescue: Path,
    backup_dir: Path,
    now: datetime,
    written: Sequence[str],
    failure: SidecarError | None,
    options: Mapping[str, int | bool],
    should_stop: Callable[[], bool],
) -> tuple[str | None, tuple[str, ...]]:
    """Archive the saved content, prove the archive, then let the rescue copies go."""
    saved = [c for c in captured if c.size_bytes > 0]  # an empty file held nothing
    safety: str | None = None
    damaged: tuple[str, ...] = ()
    try:
        if saved:
            archive = create_backup(
                [databases[c.name] for c in saved],
                backup_dir=backup_dir,
                name=mf.default_name(PRE_RESTORE_POLICY, now),
                unique=True,
                policy=PRE_RESTORE_POLICY,
                now=now,
                level=int(options["level"]),
                threads=int(options["threads"]),
                pace=bool(options["pace"]),
                captured={c.name: (c.path, c.journal_mode) for c in saved},
                should_stop=should_stop,
            )
            safety = archive.name
            assert archive.manifest is not None
            damaged = tuple(
                f"{db}: integrity_check ({e.integrity_check})"
                for db, e in archive.manifest.databases.items()
                if e.integrity_check != "ok"
            )
            # The checksums prove the archive holds the exact bytes that were checked.
            with staging_area(backup_dir, purpose="verify") as area:
                verify_archive(archive.path, staging=area, integrity=False)
    except Exception as exc:  # whatever it was, the saved content must not be lost
        why = "was interrupted" if isinstance(exc, OperationAbortedError) else f"failed: {exc}"
        raise RestoreIncompleteError(
            restored=written,
            reason=f"the pre_restore safety archive {why}",
            pre_restore_archive=None,
            rescue=rescue,
        ) from exc
    _remove_rescue(rescue)
    if failure is not None and not written:
        raise failure
    if failure is not None:
        raise RestoreIncompleteError(
            restored=written,
            reason=str(failure),
            pre_restore_archive=safety,
            rescue=None,
        ) from failure
    return safety, damaged


def _remove_rescue(rescue: Path) -> None:
    """Remove a restore's rescue directory, and ``.rescue`` itself once nothing is left in it."""
    shutil.rmtree(rescue, ignore_errors=True)
    with contextlib.suppress(OSError):
        rescue.parent.rmdir()  # fails (kept) while another restore's content is there


def _new_rescue_dir(backup_dir: Path, now: datetime) -> Path:
    """A new directory for the content a restore replaces: removed by the restore once the
    safety archive is published (or when nothing was committed), kept for the user otherwise.
    ``.rescue`` is never followed if it is a link (safefs)."""
    where = backup_dir / RESCUE_DIRNAME
    with backup_dir_fd(backup_dir) as root:
        rescue_fd = open_subdir(root, RESCUE_DIRNAME, where=where, create=True)
        try:
            base = f"{mf.default_name(PRE_RESTORE_POLICY, now)}.{os.getpid()}"
            for n in itertools.count(1):
                name = f"{base}.{n}"
                try:
                    os.mkdir(name, 0o700, dir_fd=rescue_fd)
                except FileExistsError:
                    continue
                except OSError as exc:
                    raise BackupDirError(
                        backup_dir, f"cannot create {where}: {exc.strerror}"
                    ) from exc
                return where / name
        finally:
            os.close(rescue_fd)
    raise AssertionError("unreachable")  # pragma: no cover


def rescued_content(backup_dir: Path) -> list[Path]:
    """Directories of replaced content that a restore could not archive (it failed, or its
    process died after saving it); directories of dead restores that never got as far as
    saving (nothing was replaced) are removed."""
    root = backup_dir / RESCUE_DIRNAME
    if not root.is_dir() or root.is_symlink():
        return []
    kept = []
    for entry in sorted(root.iterdir()):
        pid = entry.name.split(".")[1] if entry.name.count(".") >= 2 else ""
        if entry.is_symlink() or not entry.is_dir():
            continue
        if pid.isdigit() and Path(f"/proc/{pid}").exists():
            continue  # a restore running now (or one this process reported when it failed)
        if (entry / SAVED_MARKER).exists():
            kept.append(entry)
        else:
            shutil.rmtree(entry, ignore_errors=True)
    with contextlib.suppress(OSError):
        root.rmdir()  # only once nothing is left in it
    return kept


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


def _create_new(target: Target) -> None:
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
