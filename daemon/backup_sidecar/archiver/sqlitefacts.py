"""Small read-only questions asked of SQLite files: is it SQLite, is it intact, what is in it."""

from __future__ import annotations

import hashlib
import sqlite3
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from backup_sidecar.archiver.safefs import file_kind
from backup_sidecar.errors import LockDeadlineError, StopRequestedError

SQLITE_MAGIC = b"SQLite format 3\x00"
#: How long one attempt waits on a lock before the deadline is looked at again.
BUSY_SLICE_S = 0.05
INTEGRITY_MAX_ERRORS = 10
#: Said of a live database SQLite cannot read: a restore cannot write into it either.
TOO_DAMAGED = (
    "; SQLite cannot write a restore into a database it cannot read, so nothing changes: "
    "move it aside and restore again to create the database"
)


@dataclass(frozen=True)
class DatabaseFacts:
    """What the metadata records about a staged database."""

    page_size: int
    page_count: int
    user_version: int
    schema_sha256: str
    table_count: int
    row_counts: dict[str, int]


def not_regular_reason(path: Path) -> str:
    """Why ``path`` (links followed) cannot be a database file: ``"not a regular file (a
    FIFO)"`` and the like, the health check's words; ``""`` for a regular or missing file.

    Checked before anything opens the file: SQLite (and ``open``) wait forever on a FIFO
    for a writer."""
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return ""
    if stat.S_ISREG(mode):
        return ""
    kind = file_kind(mode)
    return "not a regular file" if kind == "not a regular file" else f"not a regular file ({kind})"


def has_sqlite_header(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def connect_readonly(path: Path, *, timeout: float = 5.0) -> sqlite3.Connection:
    """A connection that cannot write to ``path`` nor create it."""
    return sqlite3.connect(
        f"file:{quote(str(path.absolute()))}?mode=ro",
        uri=True,
        timeout=timeout,
        check_same_thread=False,
    )


def integrity_check(path: Path, *, should_stop: Callable[[], bool] | None = None) -> str:
    """``PRAGMA integrity_check`` of a file nobody else uses: "ok", or the first errors joined."""
    conn = connect_readonly(path)
    try:
        if should_stop is not None:
            conn.set_progress_handler(lambda: int(should_stop()), 100_000)
        rows = conn.execute(f"PRAGMA integrity_check({INTEGRITY_MAX_ERRORS})").fetchall()
    except sqlite3.DatabaseError as exc:
        return f"cannot be checked: {exc}"
    finally:
        conn.close()
    return "; ".join(str(row[0]) for row in rows)


def one_line(text: str, *, limit: int = 300) -> str:
    """An integrity_check result (whose rows may span lines) as one line of at most ``limit``."""
    flat = "; ".join(part.strip() for part in text.splitlines() if part.strip())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def user_tables(path: Path) -> list[str]:
    """The names of a staged database's own tables (what ``row_counts`` will hold)."""
    conn = connect_readonly(path)
    try:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    finally:
        conn.close()
    return [name for (name,) in rows if not name.startswith("sqlite_")]


def collect_facts(path: Path) -> DatabaseFacts:
    """Page geometry, schema hash and row counts of a staged (private, quiescent) database."""
    conn = connect_readonly(path)
    try:
        return read_facts(conn)
    finally:
        conn.close()


def read_facts(conn: Any) -> DatabaseFacts:
    """The facts of the database ``conn`` (any DB-API SQLite connection, e.g. sqlean's) has
    open, read in its current transaction."""
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    page_count = conn.execute("PRAGMA page_count").fetchone()[0]
    user_version = conn.execute("PRAGMA user_version").fetchone()[0]
    schema = conn.execute(
        "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master ORDER BY type, name"
    ).fetchall()
    tables = [name for kind, name, _, _ in schema if kind == "table"]
    row_counts = {
        table: conn.execute(
            f'SELECT count(*) FROM "{table.replace(chr(34), chr(34) * 2)}"'
        ).fetchone()[0]
        for table in tables
        if not table.startswith("sqlite_")
    }
    digest = hashlib.sha256()
    for row in schema:
        digest.update("\x1f".join(row).encode() + b"\x1e")
    return DatabaseFacts(
        page_size=page_size,
        page_count=page_count,
        user_version=user_version,
        schema_sha256=digest.hexdigest(),
        table_count=len([t for t in tables if not t.startswith("sqlite_")]),
        row_counts=row_counts,
    )


def page_geometry(path: Path, *, timeout: float) -> tuple[int, str]:
    """(page_size, journal_mode) of a live database, read without writing to it."""
    conn = connect_readonly(path, timeout=timeout)
    try:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        journal_mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    return int(page_size), str(journal_mode).lower()


def copy_in_one_step(
    src: sqlite3.Connection,
    dst: sqlite3.Connection,
    *,
    deadline: float,
    clock: Callable[[], float],
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """The backup API with ``pages=-1``: every page in one step, under one transaction each side.

    A step that finds a lock is retried every BUSY_SLICE_S until ``deadline`` (by ``clock``)."""

    def on_step(status: int, remaining: int, total: int) -> None:
        if should_stop():
            raise StopRequestedError
        if status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) and clock() > deadline:
            raise LockDeadlineError

    src.backup(dst, pages=-1, progress=on_step, sleep=BUSY_SLICE_S)


def read_header(path: Path) -> bytes:
    """The first 100 bytes of a file (fewer if it is shorter); b"" if it cannot be read."""
    try:
        with path.open("rb") as f:
            return f.read(100)
    except OSError:
        return b""


def header_is_wal(path: Path) -> bool:
    """Whether an SQLite file's header says WAL (read/write version bytes 2): the mode a
    database keeps on disk, which cannot change while this process holds its write lock."""
    head = read_header(path)
    return len(head) >= 20 and head[18] == 2 and head[19] == 2


def header_page_size(path: Path) -> int | None:
    """The page size an SQLite file's header records, or None if it is not a valid one."""
    head = read_header(path)
    if len(head) < 18 or not head.startswith(SQLITE_MAGIC):
        return None
    raw = int.from_bytes(head[16:18], "big")
    size = 65536 if raw == 1 else raw
    return size if size >= 512 and size & (size - 1) == 0 else None
