"""Fixtures of every suite, built from tests/support: real SQLite files, real writer and SQL
session processes, the real CLI and the real daemon as subprocesses. Tests import helpers
from `support.*`, never from a conftest."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from support.archives import GoodArchive, build_good
from support.cli import Sidecar, cli_env
from support.daemon import DaemonRunner
from support.databases import SqlSession, Writer, make_db
from support.files import short_dir
from support.paths import FIXTURES


@pytest.fixture(autouse=True)
def _priority_restored() -> Iterator[None]:
    """A job run in the test process nices the calling thread for good (by design: a daemon's
    workers stay niced), and threads started later inherit it: give the test runner's thread
    its priority back after each test, so no test sees another's niceness."""
    tid = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, tid)
    yield
    if os.getpriority(os.PRIO_PROCESS, tid) != before:
        with contextlib.suppress(PermissionError):  # lowering it needs root (CI runs as root)
            os.setpriority(os.PRIO_PROCESS, tid, before)


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


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> GoodArchive:
    """A good archive (two databases, made by create_backup) for the module's hostile
    variations to start from; built once per test module."""
    return build_good(tmp_path_factory.mktemp("good") / "scene")


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


@pytest.fixture
def sidecar_env(tmp_path: Path, backup_dir: Path) -> Callable[..., Sidecar]:
    """Build a Sidecar for given database paths (env overrides, as in the container)."""

    def build(*, arrow: Path | None = None, user: Path | None = None, **extra: str) -> Sidecar:
        arrow, user = arrow or tmp_path / "arrow_database.db", user or tmp_path / "user_data.db"
        return Sidecar(
            env=cli_env(backup_dir, arrow=arrow, user=user, **extra), backup_dir=backup_dir
        )

    return build


@pytest.fixture
def writer_process() -> Iterator[Callable[..., Writer]]:
    """Start writer processes on a database; every one is stopped at teardown."""
    started: list[Writer] = []

    def start(db: Path, *, rate: float = 0.0, seq_log: Path | None = None) -> Writer:
        started.append(Writer.start(db, rate=rate, seq_log=seq_log))
        return started[-1]

    yield start
    for writer in started:
        writer.close()


@pytest.fixture
def sql_session() -> Iterator[Callable[..., SqlSession]]:
    """Start processes that each hold one connection to a database; all closed at teardown."""
    started: list[SqlSession] = []

    def start(db: Path, *, busy_timeout: float = 5.0) -> SqlSession:
        started.append(SqlSession.start(db, busy_timeout=busy_timeout))
        return started[-1]

    yield start
    for session in started:
        session.close()


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short-path directory for control sockets, removed at teardown."""
    path = short_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test that ran daemons shows the tail of each one's log in its report: a wait
    that timed out in CI then says what the daemon was doing."""
    report: pytest.TestReport = yield
    runner = getattr(item, "funcargs", {}).get("daemons")
    if report.failed and isinstance(runner, DaemonRunner):
        for d in runner.started:
            tail = "\n".join(d.log.raw[-DAEMON_LOG_TAIL:])
            report.sections.append((f"daemon {d.proc.pid} log (last lines)", tail))
    return report


DAEMON_LOG_TAIL = 60


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[DaemonRunner]:
    """Real daemons for one test (`daemons.start(config)`); at teardown each is stopped, and
    one that logged a crash event or a traceback fails the test."""
    runner = DaemonRunner(tmp_path)
    try:
        yield runner
    finally:
        runner.close()
