"""Health checks against real SQLite files, a real concurrent writer and real corruption."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backup_sidecar.archiver import free_bytes
from backup_sidecar.archiver.model import DatabaseSpec
from backup_sidecar.service.dbcheck import DatabaseHealth, check_database
from backup_sidecar.service.health import HealthState, HealthStatus
from backup_sidecar.service.overdue import OverduePolicy, overdue_policies, policy_overdue

PAGE_SIZE = 4096
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def make_database(path: Path, *, journal_mode: str, rows: int = 4000) -> Path:
    """A real database of a few hundred pages: a table of random rows with an index."""
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        conn.execute(f"PRAGMA journal_mode={journal_mode}")
        conn.execute("CREATE TABLE arrows (id INTEGER PRIMARY KEY, name TEXT, spine BLOB)")
        conn.execute("CREATE INDEX arrows_name ON arrows (name)")
        rnd = random.Random(7)
        conn.executemany(
            "INSERT INTO arrows (name, spine) VALUES (?, ?)",
            ((f"arrow-{rnd.random()}", rnd.randbytes(120)) for _ in range(rows)),
        )
        conn.execute("CREATE TABLE log (id INTEGER PRIMARY KEY, v BLOB)")
        conn.commit()
    finally:
        conn.close()
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check(path: Path, integrity: str = "quick", timeout_s: float = 2.0) -> DatabaseHealth:
    assert integrity in ("quick", "full")
    return check_database(
        DatabaseSpec("arrow", path),
        integrity="quick" if integrity == "quick" else "full",
        timeout_s=timeout_s,
    )


@pytest.fixture
def rollback_db(tmp_path: Path) -> Path:
    """A rollback-journal (DELETE mode) database with no connection open."""
    return make_database(tmp_path / "arrow_database.db", journal_mode="delete")


@pytest.fixture
def wal_db(tmp_path: Path) -> Path:
    """A WAL database with no connection open (so no -wal or -shm file exists)."""
    path = make_database(tmp_path / "user_data.db", journal_mode="wal")
    assert not Path(f"{path}-wal").exists()
    return path


@pytest.fixture
def open_wal_db(wal_db: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    """A WAL database held open by another connection with uncheckpointed commits in -wal."""
    conn = sqlite3.connect(wal_db, isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.executemany("INSERT INTO log (v) VALUES (?)", ((os.urandom(500),) for _ in range(200)))
    yield wal_db, conn
    conn.close()


WRITER = r"""
import json, os, sqlite3, sys, time
path, stop_file = sys.argv[1], sys.argv[2]
conn = sqlite3.connect(path, timeout=10, isolation_level=None)
conn.execute("PRAGMA synchronous=OFF")  # measure lock waits, not the test machine's fsync
commits, worst, errors = 0, 0.0, []
while not os.path.exists(stop_file):
    started = time.monotonic()
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO log (v) VALUES (?)", (os.urandom(200),))
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        errors.append(str(exc))
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    worst = max(worst, time.monotonic() - started)
    commits += 1
    if commits == 1:
        print("ready", flush=True)
print(json.dumps({"commits": commits, "worst_s": worst, "errors": errors[:5]}), flush=True)
"""


@dataclasses.dataclass
class Writer:
    process: subprocess.Popen[str]
    stop_file: Path

    def finish(self) -> dict[str, object]:
        self.stop_file.touch()
        out, err = self.process.communicate(timeout=60)
        assert self.process.returncode == 0, err
        result: dict[str, object] = json.loads(out.splitlines()[-1])
        return result


def start_writer(db: Path) -> Writer:
    """A separate Python process committing to `db` in a tight loop until told to stop."""
    stop_file = db.with_name("stop-writer")
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), str(stop_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        process.kill()
        pytest.fail(f"writer did not start: {process.communicate()[1]}")
    return Writer(process, stop_file)


@pytest.fixture(params=["wal", "delete"])
def writer_process(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, Writer]]:
    """A live database (WAL and rollback journal) with a real writer process committing to it."""
    db = make_database(tmp_path / f"live-{request.param}.db", journal_mode=request.param)
    writer = start_writer(db)
    yield db, writer
    if writer.process.poll() is None:
        writer.process.kill()
        writer.process.communicate()


def test_healthy_rollback_database(rollback_db: Path) -> None:
    """A sound rollback-journal database is healthy and its sizes and page counts are reported."""
    before = sha256(rollback_db)
    for integrity in ("quick", "full"):
        health = check(rollback_db, integrity)
        assert health.healthy, health.error
        assert (health.exists, health.opens, health.check_result) == (True, True, "ok")
        assert health.size_bytes == rollback_db.stat().st_size
        assert health.page_count == rollback_db.stat().st_size // PAGE_SIZE
        assert health.freelist_count == 0
        assert health.wal_size_bytes == 0
        assert health.error is None
    assert sha256(rollback_db) == before, "a check must never write to the database"
    assert sorted(p.name for p in rollback_db.parent.iterdir()) == [rollback_db.name]


def test_wal_database_held_open_reports_wal_size(
    open_wal_db: tuple[Path, sqlite3.Connection],
) -> None:
    """A WAL database in use is checked including its -wal content, which is measured."""
    db, conn = open_wal_db
    wal_bytes = Path(f"{db}-wal").stat().st_size
    health = check(db, "full")
    assert health.healthy, health.error
    assert health.wal_size_bytes == wal_bytes > 0
    assert health.page_count is not None
    assert health.page_count * PAGE_SIZE > db.stat().st_size, "pages still in -wal are counted"
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_closed_wal_database_keeps_wal_mode(wal_db: Path) -> None:
    """A closed WAL database (no -wal, no -shm) is checked and stays in WAL mode, unchanged."""
    before = sha256(wal_db)
    health = check(wal_db)
    assert health.healthy, health.error
    assert sha256(wal_db) == before
    assert wal_db.read_bytes()[18:20] == b"\x02\x02", "the header still says WAL"


def _run_check_without_write_permission(db: Path) -> dict[str, object]:
    """Check `db` from a process that may not write its directory, returning the result."""
    code = (
        "import dataclasses, json, sys\n"
        "from pathlib import Path\n"
        "from backup_sidecar.archiver.model import DatabaseSpec\n"
        "from backup_sidecar.service.dbcheck import check_database\n"
        "h = check_database(DatabaseSpec('user', Path(sys.argv[1])), integrity='full',"
        " timeout_s=2)\n"
        "print(json.dumps(dataclasses.asdict(h), default=str))\n"
    )
    argv = [sys.executable, "-c", code, str(db)]
    if os.geteuid() == 0:
        # root writes everywhere; drop every capability so the directory mode applies.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot make a directory unwritable")
        argv = [setpriv, "--inh-caps=-all", "--bounding-set=-all", *argv]
    db.parent.chmod(0o555)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    finally:
        db.parent.chmod(0o755)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_wal_database_in_read_only_directory(wal_db: Path) -> None:
    """A closed WAL database in a directory the checker cannot write is still checked, exactly.

    A read-only connection cannot create the -shm there; with no -wal either, every page is in
    the main file and the check reads it as immutable instead of failing.
    """
    before = sha256(wal_db)
    result = _run_check_without_write_permission(wal_db)
    assert result["healthy"] is True, result["error"]
    assert result["check_result"] == "ok"
    assert sha256(wal_db) == before
    assert sorted(p.name for p in wal_db.parent.iterdir()) == [wal_db.name]


def test_wal_with_log_but_no_shm_in_read_only_directory_is_reported(
    open_wal_db: tuple[Path, sqlite3.Connection], tmp_path: Path
) -> None:
    """A -wal without -shm in an unwritable directory is never read as immutable (that would
    ignore the committed pages in -wal): it is reported with a clear reason, or read properly."""
    db, _conn = open_wal_db
    copy_dir = tmp_path / "copy"
    copy_dir.mkdir()
    copy = copy_dir / db.name
    shutil.copy(db, copy)
    shutil.copy(f"{db}-wal", f"{copy}-wal")
    result = _run_check_without_write_permission(copy)
    if result["healthy"]:
        # SQLite read the -wal without a -shm: then the committed rows must all be counted.
        expected = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            assert result["page_count"] == expected.execute("PRAGMA page_count").fetchone()[0]
        finally:
            expected.close()
    else:
        assert "-shm is missing" in str(result["error"])


def test_missing_file_is_unhealthy_and_not_created(tmp_path: Path) -> None:
    """A database that does not exist is unhealthy, and the check does not create it."""
    missing = tmp_path / "arrow_database.db"
    health = check(missing)
    assert not health.healthy
    assert (health.exists, health.opens) == (False, False)
    assert health.error == "file does not exist"
    assert not missing.exists()


def test_directory_is_unhealthy(tmp_path: Path) -> None:
    """A directory where the database should be is unhealthy: not a regular file."""
    health = check(tmp_path)
    assert not health.healthy
    assert health.exists and not health.opens
    assert health.error == "not a regular file"


def test_non_sqlite_file_is_unhealthy(tmp_path: Path) -> None:
    """A file that is not an SQLite database is unhealthy and named as such."""
    bogus = tmp_path / "user_data.db"
    bogus.write_text("this is a text file, not a database\n" * 200)
    health = check(bogus)
    assert not health.healthy
    assert not health.opens
    assert health.error is not None
    assert "not an SQLite database" in health.error


@pytest.mark.parametrize("integrity", ["quick", "full"])
@pytest.mark.parametrize("page_fraction", [0.3, 0.5, 0.8])
def test_damaged_btree_page_is_unhealthy(
    rollback_db: Path, tmp_path: Path, integrity: str, page_fraction: float
) -> None:
    """Garbage written over the middle of a b-tree page of a copy makes the copy unhealthy,
    with the check's first findings as the reason; the original stays healthy."""
    damaged = tmp_path / "damaged.db"
    shutil.copy(rollback_db, damaged)
    pages = damaged.stat().st_size // PAGE_SIZE
    start = int(pages * page_fraction) * PAGE_SIZE
    with damaged.open("r+b") as f:
        f.seek(start + 256)
        f.write(random.Random(page_fraction).randbytes(PAGE_SIZE - 512))
    health = check(damaged, integrity)
    assert not health.healthy
    assert health.check_result not in (None, "ok")
    assert health.error is not None
    assert health.error.startswith(("quick_check failed", "integrity_check failed", "database"))
    assert "\n" not in health.error, "a reason is one line"
    assert check(rollback_db, integrity).healthy


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_truncated_database_is_unhealthy(tmp_path: Path, journal_mode: str) -> None:
    """A database cut off in the middle is unhealthy (corrupt), in either journal mode."""
    db = make_database(tmp_path / "arrow_database.db", journal_mode=journal_mode)
    with db.open("r+b") as f:
        f.truncate(db.stat().st_size // 2)
    health = check(db)
    assert not health.healthy
    assert health.error is not None
    assert "corrupt" in health.error or "malformed" in health.error


def test_locked_database_fails_within_timeout(rollback_db: Path) -> None:
    """A rollback-journal database locked exclusively beyond the timeout is reported as locked,
    and the check returns instead of waiting for the lock."""
    holder = sqlite3.connect(rollback_db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        health = check(rollback_db, timeout_s=0.2)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not health.healthy
    assert health.error is not None
    assert "locked" in health.error
    assert health.duration_s < 5


def test_checks_never_disturb_a_live_writer(writer_process: tuple[Path, Writer]) -> None:
    """Repeated full checks of a database a separate process commits to in a loop: every check
    passes, the writer sees no error, and no commit waits as long as a second."""
    db, writer = writer_process
    results = [check(db, "full", timeout_s=5) for _ in range(40)]
    outcome = writer.finish()
    assert all(h.healthy for h in results), [h.error for h in results if not h.healthy]
    assert outcome["errors"] == []
    assert isinstance(outcome["commits"], int)
    assert outcome["commits"] > 1
    assert isinstance(outcome["worst_s"], float)
    assert outcome["worst_s"] < 1.0
    assert check(db, "full").healthy


def test_free_bytes_matches_statvfs(tmp_path: Path) -> None:
    """free_bytes reports what an unprivileged writer may use, as the filesystem says."""
    free = free_bytes(tmp_path)
    usage = shutil.disk_usage(tmp_path)
    assert 0 < free <= usage.total
    assert abs(free - usage.free) < 64 * 1024 * 1024  # other writers on the machine


@pytest.mark.parametrize(
    ("last_success", "started_at", "overdue"),
    [
        (NOW - timedelta(hours=25), None, False),
        (NOW - timedelta(hours=26), None, False),
        (NOW - timedelta(hours=26, seconds=1), None, True),
        (None, None, True),
        (None, NOW - timedelta(hours=1), False),
        (None, NOW - timedelta(hours=27), True),
        (NOW - timedelta(hours=30), NOW - timedelta(minutes=1), True),
    ],
)
def test_policy_overdue(
    last_success: datetime | None, started_at: datetime | None, overdue: bool
) -> None:
    """A policy is overdue once its last success is strictly older than max_age; one that
    never succeeded is overdue, or, given the daemon's start, max_age after that start."""
    assert policy_overdue(last_success, timedelta(hours=26), NOW, started_at=started_at) is overdue


def test_overdue_policies_names_each_late_policy() -> None:
    """Only policies with a max age are judged, each late one with its last success."""
    late = overdue_policies(
        {"daily": NOW - timedelta(days=2), "weekly": NOW - timedelta(days=1), "hourly": None},
        {"daily": timedelta(hours=26), "weekly": timedelta(days=8), "hourly": timedelta(hours=2)},
        now=NOW,
    )
    assert [p.policy for p in late] == ["daily", "hourly"]
    assert late[0].last_success == NOW - timedelta(days=2)


def test_a_policy_silent_past_its_max_age_is_overdue_whatever_its_date() -> None:
    """The newest archive dated in the future (a clock stepped back) is not overdue by its date,
    but no new archive for longer than the max age (monotonic seconds) is, with a reason that
    says so; silent for less is not."""
    future = NOW + timedelta(hours=1)
    late = overdue_policies(
        {"cron": future, "often": future},
        {"cron": timedelta(minutes=5), "often": timedelta(minutes=5)},
        now=NOW,
        silent_s={"cron": 301.0, "often": 299.0},
    )
    assert [p.policy for p in late] == ["cron"]
    assert "no new backup for 0:05:01, longer than 0:05:00" in late[0].reason()
    assert future.isoformat() in late[0].reason()


def test_health_status_reasons(rollback_db: Path, tmp_path: Path) -> None:
    """Each fault (bad database, late policy, failed drill, low space) gives one reason naming
    it; without faults the status is ok with no reasons."""
    good = check(rollback_db)
    bad = check(tmp_path / "missing.db")
    assert HealthStatus(databases=(good,), backup_dir_free_bytes=10, min_free_bytes=5).ok
    status = HealthStatus(
        databases=(good, bad),
        backup_dir_free_bytes=10,
        min_free_bytes=100,
        overdue=(OverduePolicy("daily", NOW - timedelta(days=3), timedelta(hours=26)),),
        last_drill_failed=True,
        last_drill_error="archive 'x' is corrupt",
    )
    reasons = status.reasons()
    assert not status.ok
    assert len(reasons) == 4
    assert "missing.db" in reasons[0] and "file does not exist" in reasons[0]
    assert "'daily'" in reasons[1]
    assert "restore drill failed" in reasons[2] and "corrupt" in reasons[2]
    assert "below the minimum" in reasons[3]


def test_health_state_updates_are_atomic() -> None:
    """Concurrent read-modify-write updates of the shared state never lose one."""
    state = HealthState()
    start = threading.Barrier(8)

    def add_overdue(worker: int) -> None:
        start.wait()
        for i in range(200):
            item = OverduePolicy(f"p{worker}-{i}", None, timedelta(hours=1))

            def append(s: HealthStatus, item: OverduePolicy = item) -> HealthStatus:
                return dataclasses.replace(s, overdue=(*s.overdue, item))

            state.update(append)

    threads = [threading.Thread(target=add_overdue, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(state.current().overdue) == 8 * 200


def test_health_state_drill_and_recovery() -> None:
    """A failed drill makes the state unhealthy until a later drill succeeds."""
    state = HealthState()
    assert state.current().ok
    assert not state.drill_finished(ok=False, error="boom").ok
    assert state.current().last_drill_error == "boom"
    assert state.drill_finished(ok=True).ok
