"""One read transaction of a live database, asked in steps: digests, check, chosen pages.

A backup first asks for every page's SHA-256 and the image's (``digests``), then, only if
it needs them, runs the check (``check``) and fetches the pages no pack holds yet (``pages``),
all inside the same read transaction, so every answer describes the same snapshot. An
unchanged database thus costs one read and hash of its pages and no transfer of them, and a
changed one transfers only its new pages. ``snapshot`` does it in this process (``reader``'s
sqlean connection: see its note on a second SQLite library in one process); ``readproc``
does the same in a child process, through a pipe.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import sqlean

from backup_sidecar.errors import PageReadError
from backup_sidecar.pagestore.checking import check_in_transaction
from backup_sidecar.pagestore.reader import ImageInfo, begin, connect, page_rows


class Snapshot(Protocol):
    """The steps a backup asks of one read transaction (in this order, each at most once)."""

    info: ImageInfo

    def digests(self) -> tuple[list[bytes], str]:
        """Every page's SHA-256 (pages 1..N) and the image's SHA-256 (hex)."""
        ...

    def check(self, check: str) -> dict[str, Any]:
        """Run ``check`` (``quick``/``full``) in the transaction: the facts (``checking``)."""
        ...

    def pages(self, pgnos: Sequence[int]) -> Iterator[bytes]:
        """The pages ``pgnos`` (ascending), in that order."""
        ...


class LocalSnapshot:
    """A ``Snapshot`` read by this process's sqlean connection."""

    def __init__(self, conn: sqlean.Connection, db: Path, info: ImageInfo) -> None:
        self._conn = conn
        self._db = db
        self.info = info

    def digests(self) -> tuple[list[bytes], str]:
        image = hashlib.sha256()
        out = []
        sha256 = hashlib.sha256
        for page in page_rows(self._conn, self._db, self.info):
            image.update(page)
            out.append(sha256(page).digest())
        return out, image.hexdigest()

    def check(self, check: str) -> dict[str, Any]:
        return check_in_transaction(self._conn, self._db, check)

    def pages(self, pgnos: Sequence[int]) -> Iterator[bytes]:
        if len(pgnos) * 8 >= self.info.page_count:  # many: one scan beats a query per page
            wanted = iter(pgnos)
            want = next(wanted, None)
            for pgno, page in enumerate(page_rows(self._conn, self._db, self.info), start=1):
                if pgno == want:
                    yield page
                    want = next(wanted, None)
            if want is not None:
                raise PageReadError(self._db, f"no page {want} in {self.info.page_count}")
            return
        query = "SELECT data FROM sqlite_dbpage WHERE pgno = ?"
        for pgno in pgnos:
            try:
                row = self._conn.execute(query, (pgno,)).fetchone()
            except sqlean.DatabaseError as exc:
                raise PageReadError(self._db, f"page {pgno}: {exc}") from exc
            if row is None or len(row[0]) != self.info.page_size:
                raise PageReadError(self._db, f"page {pgno} is missing or of the wrong size")
            yield bytes(row[0])


@contextlib.contextmanager
def snapshot(
    db: Path, *, busy_timeout_s: float = 30.0, mmap: bool = False
) -> Iterator[LocalSnapshot]:
    """The read transaction of ``db`` as a ``LocalSnapshot``, open until the block exits.

    PageReadError (one line naming the file) as ``reader.read_pages`` raises it. ``mmap``:
    see ``reader.connect`` (the reader child's choice).
    """
    conn = connect(db, busy_timeout_s=busy_timeout_s, mmap=mmap)
    try:
        yield LocalSnapshot(conn, db, begin(conn, db))
    finally:
        with contextlib.suppress(sqlean.Error):
            conn.execute("ROLLBACK")
        conn.close()
