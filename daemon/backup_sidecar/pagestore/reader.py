"""Every page of a live database, read inside ONE read transaction, without a copy.

SQLite's ``sqlite_dbpage`` virtual table returns page N of the database as the open
transaction sees it (the pager reads through the WAL), so all pages of one read transaction
form one consistent image. In WAL mode the reader blocks no writer: they append to the WAL
while it reads (a checkpoint just cannot pass its snapshot). In rollback-journal mode the
read holds a SHARED lock, so a writer's commit waits for it, as it does for any reader.

Python's own ``sqlite3`` is built without ``SQLITE_ENABLE_DBPAGE_VTAB``; the ``sqlean.py``
wheel has it. That is a second SQLite library in the process: SQLite's POSIX locks are
per process, and closing a descriptor drops all of the process's locks on that file, which
the two libraries do not coordinate (https://sqlite.org/howtocorrupt.html, 2.2.1). So while
a page read runs, nothing else in this process may hold that database open through the
stdlib ``sqlite3`` (the caller serialises them with its per-database lock, or runs the read
in a child process).
"""

from __future__ import annotations

import contextlib
import dataclasses
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlean

from backup_sidecar.errors import PageReadError
from backup_sidecar.pagestore.checking import check_in_transaction
from backup_sidecar.pagestore.header import DbHeader, parse_header

_BATCH = 256
#: ``PRAGMA mmap_size`` of the reader child (``readproc``): the whole file, up to SQLite's cap.
MMAP_BYTES = 1 << 40


@dataclass(frozen=True)
class ImageInfo:
    """What the read transaction sees: the page size, the page count and the header."""

    page_size: int
    page_count: int
    header: DbHeader
    #: The check that ran in the read transaction and the facts read there (None: no check).
    facts: dict[str, Any] | None = None


@contextlib.contextmanager
def read_pages(
    db: Path, *, busy_timeout_s: float = 30.0, check: str | None = None
) -> Iterator[tuple[ImageInfo, Iterator[bytes]]]:
    """The database's image as pages 1..N, in order, all from one read transaction.

    The transaction stays open until the block exits; the iterator must be consumed inside it.
    PageReadError (one line naming the file) if the file is missing, not a database, locked
    past ``busy_timeout_s`` or the SQLite library has no ``sqlite_dbpage``. With ``check``
    (``quick`` or ``full``, ``checking``), the check runs first in the same transaction, and
    a database that fails it is a PageReadError before any page is read.
    """
    conn = connect(db, busy_timeout_s=busy_timeout_s)
    try:
        info = begin(conn, db)
        if check is not None:
            info = dataclasses.replace(info, facts=check_in_transaction(conn, db, check))
        yield info, page_rows(conn, db, info)
    finally:
        with contextlib.suppress(sqlean.Error):
            conn.execute("ROLLBACK")
        conn.close()


def connect(db: Path, *, busy_timeout_s: float, mmap: bool = False) -> sqlean.Connection:
    """A read-only sqlean connection to ``db`` (no transaction yet); PageReadError naming it.

    With ``mmap``, SQLite reads the main file through a read-only memory map (``PRAGMA
    mmap_size``) instead of a ``pread`` copy per page: the pages read and the check's reads
    come from the page cache without a system call each (docs/pagestore.md, run H: 0.6-0.9
    CPU-s less per backup of 1 GiB). Pages in the WAL are still read from the WAL, so the
    snapshot is the same. An I/O error or a file cut short under the map is a SIGBUS, which
    ends the process: only the reader child (``readproc``) asks for it, never the daemon.
    """
    if not db.is_file():
        raise PageReadError(db, "no such file")
    uri = f"file:{urllib.parse.quote(str(db.resolve()))}?mode=ro"
    try:
        conn = sqlean.connect(uri, uri=True, timeout=busy_timeout_s, isolation_level=None)
    except sqlean.Error as exc:
        raise PageReadError(db, str(exc)) from exc
    if mmap:
        try:
            conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}").fetchall()
        except sqlean.Error as exc:
            conn.close()
            raise PageReadError(db, str(exc)) from exc
    return conn


def begin(conn: sqlean.Connection, db: Path) -> ImageInfo:
    """Start the read transaction: the snapshot's page size, page count and header."""
    try:
        conn.execute("BEGIN")
        # The first read starts the transaction: the page count is the snapshot's.
        (page_count,) = conn.execute("PRAGMA page_count").fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        row = conn.execute("SELECT data FROM sqlite_dbpage WHERE pgno = 1").fetchone()
    except sqlean.OperationalError as exc:
        if "no such table" in str(exc):
            raise PageReadError(db, "this SQLite has no sqlite_dbpage table") from exc
        raise PageReadError(db, str(exc)) from exc
    except sqlean.DatabaseError as exc:
        raise PageReadError(db, str(exc)) from exc
    if page_count < 1 or row is None:
        raise PageReadError(db, "the database is empty (0 pages)")
    try:
        header = parse_header(bytes(row[0]))
    except ValueError as exc:
        raise PageReadError(db, str(exc)) from exc
    if header.page_size != page_size:
        raise PageReadError(db, f"header page size {header.page_size} != pragma {page_size}")
    return ImageInfo(page_size=page_size, page_count=page_count, header=header)


def page_rows(conn: sqlean.Connection, db: Path, info: ImageInfo) -> Iterator[bytes]:
    """Pages 1..page_count in order, each exactly page_size bytes, in batches of rows."""
    expected = 1
    try:
        cur = conn.execute(
            "SELECT pgno, data FROM sqlite_dbpage WHERE pgno <= ? ORDER BY pgno",
            (info.page_count,),
        )
        while rows := cur.fetchmany(_BATCH):
            for pgno, data in rows:
                if pgno != expected or len(data) != info.page_size:
                    raise PageReadError(db, f"page {pgno} out of order or of the wrong size")
                expected += 1
                yield bytes(data)
    except sqlean.DatabaseError as exc:
        raise PageReadError(db, f"page {expected}: {exc}") from exc
    if expected != info.page_count + 1:
        raise PageReadError(db, f"read {expected - 1} of {info.page_count} pages")
