"""Real SQLite databases for the tests, and real processes that hold or write them."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.paths import WRITER
from support.waiting import DEADLINE_S

# --- builders -----------------------------------------------------------------------------------


def make_db(
    path: Path, *, wal: bool, rows: int = 100, page_size: int = 4096, tag: str = "row"
) -> Path:
    """A small real database with an `items` table of ``rows`` rows whose bodies carry ``tag``
    (its directory made if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA page_size={page_size}")
    conn.execute(f"PRAGMA journal_mode={'wal' if wal else 'delete'}")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    conn.execute("CREATE INDEX items_body ON items(body)")
    conn.executemany("INSERT INTO items(body) VALUES (?)", [(f"{tag}-{i}",) for i in range(rows)])
    conn.commit()
    conn.close()
    return path


def copy_of(template: Path, dest: Path) -> Path:
    """A private copy of a database made once for many tests (its directory made too)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, dest)
    return dest


def _generated(conn: sqlite3.Connection, insert: str, rows: int, *params: object) -> None:
    """Run ``insert ... SELECT ... FROM n`` over n = 1..rows, generated in SQL."""
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) " + insert,
        (rows, *params),
    )


def make_content_db(
    path: Path,
    *,
    rows: int,
    tag: str = "old",
    wal: bool = True,
    blob: int = 64,
    page_size: int = 4096,
) -> Path:
    """A real database whose content is summed up by `digest`: table ``items`` holds ``rows``
    rows tagged ``tag`` with a random checksum column ``chk`` and a random blob of ``blob``
    bytes (incompressible, so the database's size is what an archive costs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA page_size={page_size}")
    conn.execute(f"PRAGMA journal_mode={'wal' if wal else 'delete'}")
    conn.execute(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, tag TEXT NOT NULL, chk INTEGER NOT NULL, "
        "body BLOB NOT NULL)"
    )
    conn.execute("CREATE INDEX items_chk ON items(chk)")
    _generated(
        conn,
        "INSERT INTO items(tag, chk, body) SELECT ?, abs(random()) % 1000000007, randomblob(?) "
        "FROM n",
        rows,
        tag,
        blob,
    )
    conn.commit()
    if wal:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


def make_ticked_db(path: Path, *, rows: int, blob: int, ticks: int) -> Path:
    """An archive's content for the no-commit-lost tests: ``rows`` items tagged 'archived' and
    ``ticks`` rows of table ``ticks`` (``n`` 1..ticks) from long ago, as a writer leaves them."""
    make_content_db(path, rows=rows, tag="archived", wal=False, blob=blob)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE ticks (n INTEGER PRIMARY KEY, at REAL)")
    conn.executemany(
        "INSERT INTO ticks(n, at) VALUES (?, ?)", [(i, 1000.0 + i) for i in range(1, ticks + 1)]
    )
    conn.commit()
    conn.close()
    return path


def make_big_db(path: Path, *, megabytes: int, hex_text: bool = False) -> Path:
    """A WAL database of about ``megabytes`` MB of random rows of ~4000 bytes, generated in SQL:
    incompressible blobs, or hex text (which compresses to about half)."""
    body = "TEXT" if hex_text else "BLOB"
    value = "hex(randomblob(2000))" if hex_text else "randomblob(4000)"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute(f"CREATE TABLE items (id INTEGER PRIMARY KEY, body {body} NOT NULL)")
    _generated(
        conn, f"INSERT INTO items(body) SELECT {value} FROM n", megabytes * 1024 * 1024 // 4000
    )
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


# --- readers ------------------------------------------------------------------------------------

DIGEST_SQL = "SELECT count(*), total(chk), group_concat(DISTINCT tag) FROM items"


def rows_of(db: Path | str, sql: str, *, uri: bool = False) -> list[Any]:
    """Every row ``sql`` returns from ``db`` (a connection of its own, closed after)."""
    conn = sqlite3.connect(db, timeout=DEADLINE_S, uri=uri)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def count(db: Path, sql: str = "SELECT count(*) FROM items") -> int:
    return int(rows_of(db, sql)[0][0])


def row_count(db: Path, table: str = "items") -> int:
    """Rows of ``table``, read through a read-only connection."""
    return int(rows_of(f"file:{db}?mode=ro", f"SELECT count(*) FROM {table}", uri=True)[0][0])


def digest(db: Path) -> tuple[int, float, str]:
    """(row count, sum of the checksum column, the tags present) of ``items``."""
    n, total, tags = rows_of(db, DIGEST_SQL)[0]
    return int(n), float(total), str(tags)


def dump(db: Path | str, *, uri: bool = False) -> list[str]:
    """The whole database as SQL (`iterdump`, sqlite_sequence included): equal dumps, equal
    content."""
    conn = sqlite3.connect(db, timeout=DEADLINE_S, uri=uri)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def read_only_dump(db: Path) -> list[str]:
    """The dump through a read-only connection (it cannot create or change a file)."""
    return dump(f"file:{db}?mode=ro", uri=True)


def integrity(db: Path) -> str:
    return "; ".join(str(r[0]) for r in rows_of(db, "PRAGMA integrity_check"))


def journal_mode(db: Path) -> str:
    return str(rows_of(db, "PRAGMA journal_mode")[0][0])


# --- locks --------------------------------------------------------------------------------------


@contextlib.contextmanager
def holding_database_lock(backup_dir: Path, name: str) -> Iterator[None]:
    """Hold `<backup_dir>/.locks/db-<name>.lock` as a running backup/restore/prune would.

    Taking it waits for a run of the daemon's own that holds it now (a scheduled backup of the
    database may be under way when the test asks): refusing then made a long test flaky."""
    locks = backup_dir / ".locks"
    locks.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(locks / f"db-{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --- processes that use a database --------------------------------------------------------------


def _python(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _started(proc: subprocess.Popen[str], ready: str) -> None:
    """A helper process said "ready"; otherwise it is killed and its stderr fails the test."""
    if ready.strip() != "ready":
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(err or ready)


@dataclass
class Writer:
    """A separate process committing one row per transaction into `ticks` until stopped."""

    proc: subprocess.Popen[str]
    status: Path

    @classmethod
    def start(cls, db: Path, *, rate: float = 0.0, seq_log: Path | None = None) -> Writer:
        """tests/support/writer.py on ``db``, once it made its first commit."""
        status = db.with_name(db.name + ".writer-status")
        extra = [str(seq_log)] if seq_log else []
        proc = _python(str(WRITER), str(db), str(status), str(rate), *extra)
        assert proc.stdout is not None
        ready = proc.stdout.readline()  # the writer prints "ready" after its first commit
        _started(proc, ready)
        return cls(proc, status)

    def committed(self) -> int:
        text = self.status.read_text() if self.status.exists() else ""
        return int(text.split()[0]) if text.strip() else 0

    def stop(self) -> dict[str, Any]:
        """Stop the writer (EOF on its stdin); returns its report (commits, errors,
        max_latency_s, p99_latency_s)."""
        out, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err
        return dict(json.loads(out))

    def close(self) -> None:
        """Kill it if it still runs, and close its pipes (left to the GC they warn inside a
        later test)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


_SQL_SESSION = r"""
import json, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=float(sys.argv[2]), isolation_level=None)
print("ready", flush=True)
for line in sys.stdin:
    try:
        print(json.dumps({"rows": conn.execute(line).fetchall()}), flush=True)
    except sqlite3.Error as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
conn.close()
"""


@dataclass
class SqlSession:
    """A separate process with ONE open connection (autocommit) that runs SQL lines on request."""

    proc: subprocess.Popen[str]

    @classmethod
    def start(cls, db: Path, *, busy_timeout: float = 5.0) -> SqlSession:
        session = cls(_python("-c", _SQL_SESSION, str(db), str(busy_timeout)))
        ready = ""
        with contextlib.suppress(TimeoutError):
            ready = session._line(30.0)
        _started(session.proc, ready)
        return session

    def _line(self, deadline_s: float) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], deadline_s)
        if not ready:
            raise TimeoutError(f"SQL session gave no answer within {deadline_s}s")
        return self.proc.stdout.readline()

    def execute(self, sql: str, *, deadline_s: float = 30.0) -> list[list[object]]:
        """Run one statement on the session's connection; its rows, or AssertionError on error."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(sql.replace("\n", " ") + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self._line(deadline_s))
        assert "error" not in answer, f"{sql!r}: {answer['error']}"
        return list(answer["rows"])

    def close(self) -> None:
        """End the session (EOF on stdin) and release its pipes."""
        try:
            self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()


@contextlib.contextmanager
def holding_readers_out(db: Path) -> Iterator[None]:
    """An application connection in exclusive locking mode inside a write: every other
    connection, the sidecar's snapshot included, gets SQLITE_BUSY (and retries) until it closes."""
    app = sqlite3.connect(db, isolation_level=None)
    try:
        app.execute("PRAGMA locking_mode=EXCLUSIVE")
        app.execute("BEGIN EXCLUSIVE")
        app.execute("CREATE TABLE IF NOT EXISTS held (x)")
        yield
        app.execute("COMMIT")
    finally:
        app.close()
