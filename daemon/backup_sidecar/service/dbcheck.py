"""Read-only health checks of the live databases.

A check opens the database through a `mode=ro` URI, so it never creates the file, never changes
its journal mode and never writes to it; it holds at most one read transaction (the length of
`quick_check` or `integrity_check`), which in WAL mode blocks no writer at all.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from backup_sidecar.archiver.model import DatabaseSpec

#: How many lines of a failed check a report keeps (a corrupt database can yield thousands).
MAX_CHECK_LINES = 5


@dataclass(frozen=True)
class DatabaseHealth:
    """The outcome of one check of one database; `error` says why it is unhealthy."""

    name: str
    path: Path
    exists: bool
    opens: bool
    check_result: str | None
    healthy: bool
    size_bytes: int | None = None
    wal_size_bytes: int | None = None
    page_count: int | None = None
    freelist_count: int | None = None
    error: str | None = None
    duration_s: float = 0.0
    #: False until a check completes: the application held the database locked past the
    #: check's timeout before any check got through. Unknown is not unhealthy (`error` says
    #: why it is unknown).
    known: bool = True


@dataclass(frozen=True)
class _Inspection:
    page_count: int
    freelist_count: int
    check_lines: tuple[str, ...]


class _WalNeedsWritableDirError(sqlite3.OperationalError):
    """A read-only connection to a WAL database found no -shm and could not create one."""


def check_database(
    spec: DatabaseSpec, *, integrity: Literal["quick", "full"], timeout_s: float
) -> DatabaseHealth:
    """Check one live database without writing to it; every failure becomes an unhealthy result."""
    started = time.monotonic()
    path = spec.path
    unhealthy = functools.partial(
        DatabaseHealth, name=spec.name, path=path, opens=False, check_result=None, healthy=False
    )
    try:
        st = path.stat()
    except OSError as exc:
        missing = isinstance(exc, FileNotFoundError)
        reason = "file does not exist" if missing else f"cannot stat: {exc.strerror or exc}"
        return unhealthy(exists=False, error=reason, duration_s=time.monotonic() - started)
    size, wal_size = st.st_size, _wal_size(path)
    present = functools.partial(unhealthy, exists=True, size_bytes=size, wal_size_bytes=wal_size)
    if not stat.S_ISREG(st.st_mode):
        return present(error="not a regular file", duration_s=time.monotonic() - started)
    try:
        found = _inspect_read_only(path, integrity=integrity, timeout_s=timeout_s)
    except sqlite3.Error as exc:
        error = _describe_open_error(path, exc)
        return present(error=error, duration_s=time.monotonic() - started)
    check = "; ".join(found.check_lines[:MAX_CHECK_LINES])
    healthy = found.check_lines == ("ok",)
    return DatabaseHealth(
        name=spec.name,
        path=path,
        exists=True,
        opens=True,
        check_result=check,
        healthy=healthy,
        size_bytes=size,
        wal_size_bytes=wal_size,
        page_count=found.page_count,
        freelist_count=found.freelist_count,
        error=None if healthy else f"{_pragma(integrity)} failed: {check}",
        duration_s=time.monotonic() - started,
    )


def _inspect_read_only(
    path: Path, *, integrity: Literal["quick", "full"], timeout_s: float
) -> _Inspection:
    """Run the checks read-only; fall back to `immutable=1` only where that is provably safe.

    A read-only connection to a WAL database needs the -shm file, which it cannot create in a
    directory it may not write. When no -wal exists either, no connection has the database open
    and every page is in the main file, so reading it as immutable is exact, provided nothing
    starts writing meanwhile: the file is compared before and after, and a change discards the
    result and retries the normal way (a writer has created the -wal and -shm by then).
    """
    base = "file:" + quote(str(path.absolute()))
    try:
        return _inspect(f"{base}?mode=ro", integrity=integrity, timeout_s=timeout_s)
    except _WalNeedsWritableDirError:
        if _wal_path(path).exists():
            raise
    before = _fingerprint(path)
    found = _inspect(f"{base}?mode=ro&immutable=1", integrity=integrity, timeout_s=timeout_s)
    if _fingerprint(path) == before and not _wal_path(path).exists():
        return found
    return _inspect(f"{base}?mode=ro", integrity=integrity, timeout_s=timeout_s)


def _inspect(uri: str, *, integrity: Literal["quick", "full"], timeout_s: float) -> _Inspection:
    conn = sqlite3.connect(uri, uri=True, timeout=timeout_s, isolation_level=None)
    try:
        # The schema read is what fails first on a file that is not a database.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        page_count = int(conn.execute("PRAGMA page_count").fetchone()[0])
        freelist_count = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        try:
            rows = conn.execute(f"PRAGMA {_pragma(integrity)}({MAX_CHECK_LINES})").fetchall()
            lines = _check_lines(str(row[0]) for row in rows)
        except sqlite3.DatabaseError as exc:
            if _errorname(exc).startswith(("SQLITE_BUSY", "SQLITE_READONLY")):
                raise
            # SQLITE_CORRUPT and friends abort the check itself: that is its result.
            lines = (str(exc),)
        return _Inspection(page_count, freelist_count, lines)
    except sqlite3.OperationalError as exc:
        if _errorname(exc) == "SQLITE_READONLY_DIRECTORY":
            raise _WalNeedsWritableDirError(str(exc)) from exc
        raise
    finally:
        conn.close()


def _check_lines(rows: Iterable[str]) -> tuple[str, ...]:
    """The check's findings one per line, without SQLite's per-schema headings."""
    lines = [line.strip() for row in rows for line in row.splitlines() if line.strip()]
    findings = [line for line in lines if not line.startswith("***")]
    return tuple(findings or lines) or ("no result",)


def _pragma(integrity: Literal["quick", "full"]) -> str:
    return "quick_check" if integrity == "quick" else "integrity_check"


def _errorname(exc: sqlite3.Error) -> str:
    return str(getattr(exc, "sqlite_errorname", ""))


def _describe_open_error(path: Path, exc: sqlite3.Error) -> str:
    """One line on why the database could not be read at all."""
    name = _errorname(exc)
    shm_missing = not path.with_name(path.name + "-shm").exists()
    dir_read_only = not os.access(path.parent, os.W_OK)
    if isinstance(exc, _WalNeedsWritableDirError) or (
        name.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY")) and shm_missing and dir_read_only
    ):
        return (
            f"cannot open WAL database read-only: {path.name}-shm is missing and "
            f"{path.parent} is not writable ({exc})"
        )
    if name.startswith("SQLITE_BUSY"):
        return f"database is locked: {exc}"
    if name.startswith("SQLITE_NOTADB"):
        return f"not an SQLite database: {exc}"
    if name.startswith("SQLITE_CORRUPT"):
        return f"database is corrupt: {exc}"
    return f"cannot read database: {exc}"


def _wal_path(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def _wal_size(path: Path) -> int:
    try:
        return _wal_path(path).stat().st_size
    except FileNotFoundError:
        return 0


def _fingerprint(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns
