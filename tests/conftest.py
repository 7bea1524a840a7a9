"""Shared fixtures: real SQLite files, a real writer process, the real CLI as a subprocess."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared" / "fixtures" / "arrowtuner"
if not FIXTURES.is_dir():  # CI lays shared/ beside the clone; a developer checkout may differ
    FIXTURES = Path("/work/shared/fixtures/arrowtuner")

needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir(), reason=f"ArrowTuner fixtures not found at {FIXTURES}"
)


@pytest.fixture
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"ArrowTuner fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture
def backup_dir(tmp_path: Path) -> Path:
    path = tmp_path / "backups"
    path.mkdir()
    return path


def make_db(path: Path, *, wal: bool, rows: int = 100, page_size: int = 4096) -> Path:
    """A small real database with an `items` table of ``rows`` rows."""
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA page_size={page_size}")
    conn.execute(f"PRAGMA journal_mode={'wal' if wal else 'delete'}")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    conn.execute("CREATE INDEX items_body ON items(body)")
    conn.executemany("INSERT INTO items(body) VALUES (?)", [(f"row-{i}",) for i in range(rows)])
    conn.commit()
    conn.close()
    return path


@pytest.fixture
def wal_db(tmp_path: Path) -> Path:
    return make_db(tmp_path / "user_data.db", wal=True)


@pytest.fixture
def rollback_db(tmp_path: Path) -> Path:
    return make_db(tmp_path / "user_data.db", wal=False)


@pytest.fixture
def arrow_db(tmp_path: Path, fixtures_dir: Path) -> Path:
    """A private copy of the real 2025-08-14 ArrowTuner arrow database (rollback journal)."""
    dest = tmp_path / "arrow_database.db"
    shutil.copyfile(fixtures_dir / "arrow_database_2025-08-14.db", dest)
    return dest


@dataclass
class Sidecar:
    """The real CLI, run as a subprocess against one set of databases and one backup dir."""

    env: dict[str, str]
    backup_dir: Path

    def run(
        self, *args: str, input: str | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "backup_sidecar", *args],
            env=self.env,
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            check=False,
        )


@pytest.fixture
def sidecar_env(tmp_path: Path, backup_dir: Path) -> Callable[..., Sidecar]:
    """Build a Sidecar for given database paths (env overrides, as in the container)."""

    def build(*, arrow: Path | None = None, user: Path | None = None, **extra: str) -> Sidecar:
        env = {k: v for k, v in os.environ.items() if not k.endswith("_DATABASE_PATH")}
        env.pop("SIDECAR_CONFIG", None)
        env["BACKUP_DIR"] = str(backup_dir)
        env["ARROW_DATABASE_PATH"] = str(arrow or tmp_path / "arrow_database.db")
        env["USER_DATABASE_PATH"] = str(user or tmp_path / "user_data.db")
        env["SIDECAR_LOG_FORMAT"] = "json"
        env.update(extra)
        return Sidecar(env=env, backup_dir=backup_dir)

    return build


WRITER = ROOT / "tests" / "support" / "writer.py"


@dataclass
class Writer:
    """A separate process committing one row per transaction into `ticks` until stopped."""

    proc: subprocess.Popen[str]
    status: Path

    def committed(self) -> int:
        text = self.status.read_text() if self.status.exists() else ""
        return int(text.split()[0]) if text.strip() else 0

    def stop(self) -> dict[str, float]:
        """Stop the writer; returns its report (commits, errors, max_latency_s)."""
        out, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err
        import json

        return dict(json.loads(out))


@pytest.fixture
def writer_process() -> Iterator[Callable[..., Writer]]:
    """Start writer processes on a database; every one is stopped at teardown."""
    started: list[Writer] = []

    def start(db: Path, *, rate: float = 0.0, seq_log: Path | None = None) -> Writer:
        status = db.with_name(db.name + ".writer-status")
        extra = [str(seq_log)] if seq_log else []
        proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(db), str(status), str(rate), *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        ready = proc.stdout.readline()  # the writer prints "ready" after its first commit
        assert ready.strip() == "ready", proc.stderr.read() if proc.stderr else ready
        w = Writer(proc, status)
        started.append(w)
        return w

    yield start
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
        w.proc.communicate()  # closes its pipes: left to the GC they warn inside a later test


# --- Archiver tests: another process holding a connection open -----------------------------

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

    def _line(self, deadline_s: float) -> str:
        import select

        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], deadline_s)
        if not ready:
            raise TimeoutError(f"SQL session gave no answer within {deadline_s}s")
        return self.proc.stdout.readline()

    def execute(self, sql: str, *, deadline_s: float = 30.0) -> list[list[object]]:
        """Run one statement on the session's connection; its rows, or AssertionError on error."""
        import json

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


@pytest.fixture
def sql_session() -> Iterator[Callable[..., SqlSession]]:
    """Start processes that each hold one connection to a database; all closed at teardown."""
    started: list[SqlSession] = []

    def start(db: Path, *, busy_timeout: float = 5.0) -> SqlSession:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SQL_SESSION, str(db), str(busy_timeout)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        session = SqlSession(proc)
        started.append(session)
        ready = session._line(30.0)
        assert ready.strip() == "ready", proc.stderr.read() if proc.stderr else ready
        return session

    yield start
    for session in started:
        session.close()
