"""What a restore will do to each live database, decided (and refused) before anything changes.

A live path is one of: missing (the database is created), an empty file (SQLite reads it as an
empty database: written over, nothing to save), or an SQLite database, intact or not (its
content is saved, then written over). Anything else is refused with the reason: a directory, a
dangling symbolic link, a file that is not SQLite at all, a WAL database whose page size the
archive's copy does not share.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from backup_sidecar.archiver.model import DatabaseSpec
from backup_sidecar.archiver.snapshot import take_snapshot
from backup_sidecar.archiver.sqlitefacts import (
    BUSY_SLICE_S,
    TOO_DAMAGED,
    connect_readonly,
    has_sqlite_header,
    header_is_wal,
    header_page_size,
    integrity_check,
    not_regular_reason,
    one_line,
    page_geometry,
)
from backup_sidecar.archiver.staging import free_bytes
from backup_sidecar.archiver.verify import VerifiedArchive
from backup_sidecar.errors import (
    DatabaseError,
    InsufficientSpaceError,
    RestoreRefusedError,
    SidecarError,
    UnknownDatabaseError,
)

_SPACE_MARGIN = 8 << 20


class Live(Enum):
    """What is at a live path before the restore."""

    MISSING = "missing"
    EMPTY = "empty"
    DATABASE = "database"


@dataclass(frozen=True)
class Target:
    spec: DatabaseSpec
    staged: Path
    live: Live


def plan_targets(
    verified: VerifiedArchive,
    *,
    databases: Mapping[str, DatabaseSpec],
    selected: Sequence[str] | None,
) -> list[Target]:
    """The databases to restore, each checked against what is at its live path."""
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
        target = Target(spec, verified.staged[name], _live_kind(spec))
        _check_page_size(target)
        targets.append(target)
    return targets


def _live_kind(spec: DatabaseSpec) -> Live:
    path = spec.path
    if path.is_symlink() and not path.exists():
        raise DatabaseError(
            spec.name,
            path,
            f"is a symbolic link to {path.readlink()}, which does not exist; refusing to "
            "restore through a dangling link (point it at a file, or remove it)",
        )
    if not path.exists():
        if not path.parent.is_dir():
            raise DatabaseError(spec.name, path, "its directory does not exist")
        return Live.MISSING
    if path.is_dir():
        raise DatabaseError(spec.name, path, "is a directory, not a database file")
    if problem := not_regular_reason(path):  # a FIFO would hang the restore, forever
        raise DatabaseError(spec.name, path, f"is {problem}; refusing to restore into it")
    if path.stat().st_size == 0:
        return Live.EMPTY
    if not has_sqlite_header(path):
        raise DatabaseError(
            spec.name, path, f"is not an SQLite database (no SQLite header){_FOREIGN}"
        )
    unreadable = _header_refused(path)
    if unreadable:
        raise DatabaseError(spec.name, path, f"SQLite cannot open it ({unreadable}){_FOREIGN}")
    return Live.DATABASE


_FOREIGN = (
    "; refusing to write over it: SQLite cannot open it, so no application is using it as a "
    "database; move it aside and restore again to create the database"
)


def _header_refused(path: Path) -> str | None:
    """SQLite's reason for refusing the file outright (a header it cannot read), else None.

    A damaged database whose header SQLite accepts is saved and written over; one whose header
    it refuses cannot be written through SQLite at all."""
    try:
        conn = connect_readonly(path, timeout=BUSY_SLICE_S)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        conn.execute("PRAGMA user_version").fetchone()  # reads page 1 only, never the schema
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorname", "") == "SQLITE_NOTADB":
            return str(exc)
    finally:
        conn.close()
    return None


def _check_page_size(target: Target) -> None:
    if target.live is not Live.DATABASE or not header_is_wal(target.spec.path):
        return
    live_page = header_page_size(target.spec.path)
    staged_page, _ = page_geometry(target.staged, timeout=5.0)
    if live_page != staged_page:
        spec = target.spec
        raise RestoreRefusedError(
            f"database {spec.name!r} ({spec.path}) is in WAL mode with page size {live_page}, "
            f"the archive's copy has page size {staged_page}; SQLite cannot restore across "
            "page sizes into a WAL database (switch it to journal_mode=DELETE first)"
        )


def check_space(targets: Sequence[Target], *, backup_dir: Path) -> None:
    """The saved pre-images and their safety archive need room in the backup directory; each
    live directory needs room for the WAL or rollback journal the restore writes."""
    live_total = sum(t.spec.path.stat().st_size for t in targets if t.live is Live.DATABASE)
    need = 2 * live_total + _SPACE_MARGIN
    free = free_bytes(backup_dir)
    if need > free:
        raise InsufficientSpaceError(backup_dir, need, free, "the pre-restore safety backup")
    by_dir: dict[Path, int] = {}
    for t in targets:
        old = t.spec.path.stat().st_size if t.live is not Live.MISSING else 0
        by_dir[t.spec.path.parent] = by_dir.get(t.spec.path.parent, 0) + max(
            old, t.staged.stat().st_size
        )
    for directory, needed in by_dir.items():
        free = free_bytes(directory)
        if needed + _SPACE_MARGIN > free:
            raise InsufficientSpaceError(directory, needed + _SPACE_MARGIN, free, "the restore")


def describe(archive: str, target: Target) -> str:
    """One plan line: what the restore does to this database."""
    spec = target.spec
    if target.live is Live.MISSING:
        return f"create {spec.name!r} at {spec.path} from {archive!r}"
    if target.live is Live.EMPTY:
        return (
            f"replace the content of {spec.name!r} at {spec.path} (an empty file: nothing to "
            f"save) from {archive!r}"
        )
    return f"replace the content of {spec.name!r} at {spec.path} from {archive!r}"


def predict_damage(target: Target, *, area: Path, lock_timeout: float) -> str | None:
    """For a dry run: why the live database would be saved as damaged, or None if it is intact.

    The check runs on a consistent copy in ``area``, as the real run's check does on the
    content it saves."""
    if target.live is not Live.DATABASE:
        return None
    copy = area / f"predict-{target.spec.member}"
    try:
        take_snapshot(target.spec, dest=copy, lock_timeout=lock_timeout)
    except SidecarError as exc:
        if not isinstance(exc, DatabaseError) or "locked" in str(exc):
            raise
        # What SQLite cannot read through, it cannot write through either: the real run's
        # write fails and rolls back (a truncated file), so the dry run says so.
        raise DatabaseError(
            target.spec.name, target.spec.path, f"{exc.reason}{TOO_DAMAGED}"
        ) from None
    try:
        result = integrity_check(copy)
    except sqlite3.Error as exc:  # pragma: no cover - integrity_check reports its own errors
        result = str(exc)
    finally:
        copy.unlink(missing_ok=True)
    return None if result == "ok" else f"integrity_check ({one_line(result)})"
