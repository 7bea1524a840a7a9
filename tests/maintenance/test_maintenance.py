"""Database maintenance (issue 17 item 4) on real SQLite files with a live writer: the WAL
checkpoint, and VACUUM right after a real backup, inside its window and within the writers'
wait bound, refused (and nothing run) otherwise."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from backup_sidecar import jobs
from backup_sidecar.archiver import database_locks
from backup_sidecar.errors import ConfigError
from backup_sidecar.jobs.outcomes import BackupFinished
from backup_sidecar.service.dbcheck import check_database
from backup_sidecar.service.live import Configured, LiveConfig
from backup_sidecar.service.maintenance import Maintainer
from backup_sidecar.settings import load_configuration
from backup_sidecar.settings.maintenance import in_window, parse_window
from support.databases import Writer, integrity
from support.waiting import wait_until

ROWS_MB = 24


def _freelist_db(path: Path, *, wal: bool, auto_vacuum: str = "none") -> Path:
    """A database of ~24 MiB of which three quarters are free pages after a delete."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA auto_vacuum={auto_vacuum}")
    conn.execute(f"PRAGMA journal_mode={'wal' if wal else 'delete'}")
    conn.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, body BLOB)")
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "INSERT INTO blobs(body) SELECT randomblob(16384) FROM n",
        (ROWS_MB * 64,),
    )
    conn.execute("DELETE FROM blobs WHERE id % 4 != 0")
    conn.close()
    return path


def _ratio(path: Path) -> float:
    conn = sqlite3.connect(path)
    try:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    finally:
        conn.close()
    return float(free) / float(pages)


def _window(*, inside: bool) -> str:
    now = datetime.now(UTC)
    start = now - timedelta(hours=1) if inside else now + timedelta(hours=2)
    end = start + timedelta(hours=2) if inside else start + timedelta(hours=1)
    return f"{start:%H:%M}-{end:%H:%M}"


def _live(tmp_path: Path, db: Path, maintenance: dict[str, Any]) -> LiveConfig:
    lines = [f"    {k}: {v!r}" for k, v in maintenance.items()]
    config = tmp_path / "sidecar.yaml"
    (tmp_path / "backups").mkdir(exist_ok=True)  # the daemon's claim makes it
    config.write_text(
        f"backup_dir: {tmp_path / 'backups'}\n"
        f"databases:\n  user: {{path: {db}}}\n"
        "policies:\n  nightly: {keep: 3}\n"
        "maintenance:\n" + "\n".join(lines).replace("'", '"') + "\n"
    )
    settings, paths = load_configuration(config, environ={}, cwd=tmp_path)
    return LiveConfig(Configured.of(settings, paths))


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def maintainers() -> Iterator[list[Maintainer]]:
    started: list[Maintainer] = []
    yield started
    for m in started:
        m.stop()


def _maintainer(
    live: LiveConfig, registry: CollectorRegistry, into: list[Maintainer]
) -> Maintainer:
    m = Maintainer(live=live, registry=registry)
    m.start()
    into.append(m)
    return m


def _backup_then_maintain(live: LiveConfig, m: Maintainer) -> None:
    """A real backup of `user` whose success the maintainer hears; wait until it is done."""
    jobs.run_backup(live.now.runtime, policy="nightly", outcomes=jobs.Outcomes(m))
    wait_until(m.idle, what="maintenance finished")


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(f"backup_sidecar_{name}", labels) or 0.0


def test_checkpoint_truncates_a_wal_past_its_bound_under_a_live_writer(
    tmp_path: Path, registry: CollectorRegistry, maintainers: list[Maintainer]
) -> None:
    """A WAL grown past max_wal_bytes (a reader kept it from being reset) is checkpointed
    with TRUNCATE after the health check sees it: the -wal shrinks below the bound, the writer
    commits throughout without an error, the threshold gauge is exported and the run counted."""
    db = tmp_path / "user.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE big (body BLOB)")
    for _ in range(64):
        conn.execute("INSERT INTO big VALUES (randomblob(65536))")
    writer = Writer.start(db, rate=200)
    try:
        before = db.with_name("user.db-wal").stat().st_size
        assert before > 4 * 1024 * 1024
        live = _live(tmp_path, db, {"max_wal_bytes": 1024 * 1024, "max_writer_wait": "2s"})
        m = _maintainer(live, registry, maintainers)
        spec = live.now.runtime.databases["user"]
        with capture_logs() as logs:
            m.checked((check_database(spec, integrity="quick", timeout_s=5),))
            wait_until(m.idle, what="checkpoint finished")
        done = [e for e in logs if e["event"] == "maintenance_completed"]
        assert done, logs
        assert done[0]["op"] == "checkpoint" and done[0]["busy"] is False
        assert done[0]["wal_bytes_before"] >= before
        assert db.with_name("user.db-wal").stat().st_size < 1024 * 1024
        assert _sample(registry, "maintenance_max_wal_bytes", database="user") == 1024 * 1024
        runs = {"database": "user", "op": "checkpoint", "result": "ok"}
        assert _sample(registry, "maintenance_runs_total", **runs) == 1
    finally:
        report = writer.stop()
        writer.close()
        conn.close()
    assert report["errors"] == 0 and report["commits"] > 0
    assert integrity(db) == "ok"


@pytest.mark.parametrize(
    ("wal", "auto_vacuum"), [(True, "none"), (False, "none"), (True, "incremental")]
)
def test_vacuum_in_its_window_after_a_backup_shrinks_the_database_within_the_bound(
    tmp_path: Path,
    registry: CollectorRegistry,
    maintainers: list[Maintainer],
    wal: bool,
    auto_vacuum: str,
) -> None:
    """Right after a real backup, inside the window, with a big freelist and a generous
    max_writer_wait, the database is vacuumed (incremental_vacuum under auto_vacuum=incremental)
    while a writer commits: the file shrinks, the freelist is gone, the writer saw no error and
    never waited longer than the bound, and the estimate exported."""
    db = _freelist_db(tmp_path / "user.db", wal=wal, auto_vacuum=auto_vacuum)
    size = db.stat().st_size
    assert _ratio(db) > 0.7
    bound = 10.0
    live = _live(
        tmp_path,
        db,
        {"max_freelist_ratio": 0.2, "vacuum": True, "window": _window(inside=True),
         "max_writer_wait": f"{bound:g}s"},
    )  # fmt: skip
    m = _maintainer(live, registry, maintainers)
    writer = Writer.start(db, rate=100)
    try:
        with capture_logs() as logs:
            _backup_then_maintain(live, m)
    finally:
        report = writer.stop()
        writer.close()
    vacuumed = [e for e in logs if e["event"] == "maintenance_completed" and e["op"] == "vacuum"]
    assert len(vacuumed) == 1, logs
    assert vacuumed[0]["incremental"] is (auto_vacuum == "incremental")
    # The estimate is exported; it is not compared with the time taken: on a loaded machine
    # a 24 MiB VACUUM took from 0.6x to 2x its estimate (the writer's wait is what is bounded).
    estimate = _sample(registry, "maintenance_vacuum_estimate_seconds", database="user")
    assert estimate == vacuumed[0]["estimate_s"] > 0
    assert db.stat().st_size < size / 2
    assert _ratio(db) < 0.05
    assert report["errors"] == 0 and report["commits"] > 0
    assert report["max_latency_s"] < bound
    assert integrity(db) == "ok"
    assert (
        _sample(registry, "maintenance_runs_total", database="user", op="vacuum", result="ok") == 1
    )
    assert (
        _sample(registry, "maintenance_runs_total", database="user", op="optimize", result="ok")
        == 1
    )


@pytest.mark.parametrize(
    ("window", "wait", "reason"),
    [(False, "10s", "outside_window"), (True, "1ms", "over_bound")],
)
def test_vacuum_refused_outside_the_window_or_over_the_bound_runs_nothing(
    tmp_path: Path,
    registry: CollectorRegistry,
    maintainers: list[Maintainer],
    window: bool,
    wait: str,
    reason: str,
) -> None:
    """Outside the window, or with a max_writer_wait below the estimate, the VACUUM is refused
    and says why (maintenance_refused, refusals_total{reason}); the database is untouched: same
    size, same freelist."""
    db = _freelist_db(tmp_path / "user.db", wal=True)
    ratio = _ratio(db)
    live = _live(
        tmp_path,
        db,
        {"max_freelist_ratio": 0.2, "vacuum": True, "window": _window(inside=window),
         "max_writer_wait": wait, "optimize": False},
    )  # fmt: skip
    m = _maintainer(live, registry, maintainers)
    size = db.stat().st_size
    with capture_logs() as logs:
        _backup_then_maintain(live, m)
    refused = [e for e in logs if e["event"] == "maintenance_refused"]
    assert [(e["op"], e["reason"]) for e in refused] == [("vacuum", reason)]
    assert not [e for e in logs if e["event"] == "maintenance_completed"]
    assert db.stat().st_size == size and _ratio(db) == ratio
    labels = {"database": "user", "op": "vacuum", "reason": reason}
    assert _sample(registry, "maintenance_refusals_total", **labels) == 1


def test_maintenance_never_runs_while_the_database_is_locked(
    tmp_path: Path, registry: CollectorRegistry, maintainers: list[Maintainer]
) -> None:
    """A backup or restore holds the database's lock: maintenance due then is refused as busy
    (counted, logged) and does not touch the database; nothing waits for the lock."""
    db = _freelist_db(tmp_path / "user.db", wal=True)
    live = _live(
        tmp_path,
        db,
        {"max_freelist_ratio": 0.2, "vacuum": True, "window": _window(inside=True)},
    )
    m = _maintainer(live, registry, maintainers)
    size = db.stat().st_size
    event = BackupFinished(
        policy="nightly",
        archive="nightly_x",
        finished_at=datetime.now(UTC),
        duration_s=1.0,
        snapshot_seconds={"user": 0.05},
    )
    with database_locks(live.now.runtime.backup_dir, ["user"]):
        m(event)
        wait_until(m.idle, what="maintenance refused")
    busy = {"database": "user", "op": "after_backup", "result": "busy"}
    assert _sample(registry, "maintenance_runs_total", **busy) == 1
    assert db.stat().st_size == size


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"vacuum": True, "max_freelist_ratio": 0.2}, "vacuum needs a window"),
        ({"vacuum": True, "window": "02:00-04:00"}, "vacuum needs max_freelist_ratio"),
        ({"window": "2-4"}, 'use "HH:MM-HH:MM"'),
        ({"window": "03:00-03:00"}, "is empty"),
        ({"max_freelist_ratio": 1.5}, "max_freelist_ratio"),
        ({"databases": ["nope"]}, "unknown database 'nope'"),
        ({"databases": []}, "maintenance.databases: List should have at least 1 item"),
    ],
)
def test_a_bad_maintenance_section_is_refused_with_its_key(
    tmp_path: Path, section: dict[str, Any], message: str
) -> None:
    """A maintenance section that could not be honoured (a VACUUM without a window or a
    threshold, a malformed or empty window, a ratio above 1, an unknown database, an empty
    database list, which would maintain none) is refused at load with one line naming the key."""
    with pytest.raises(ConfigError, match="maintenance") as caught:
        _live(tmp_path, tmp_path / "user.db", section)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value).strip()


def test_windows_wrap_past_midnight() -> None:
    """A window whose end is before its start runs across midnight: 23:00-01:00 holds 23:30
    and 00:30, not 01:00 nor 22:59; 02:00-04:00 holds 02:00, not 04:00."""
    night = parse_window("23:00-01:00")
    assert in_window(night, time(23, 30)) and in_window(night, time(0, 30))
    assert not in_window(night, time(1, 0)) and not in_window(night, time(22, 59))
    early = parse_window("02:00-04:00")
    assert in_window(early, time(2, 0)) and not in_window(early, time(4, 0))


def test_threshold_gauges_go_with_the_section_that_set_them(
    tmp_path: Path, registry: CollectorRegistry, maintainers: list[Maintainer]
) -> None:
    """The max_wal_bytes and max_freelist_ratio gauges (what the alerts compare with) are
    exported while the section covers the database, and removed at the next check once a
    reload dropped the section: an alert on them clears when its cause goes."""
    db = _freelist_db(tmp_path / "user.db", wal=True)
    live = _live(tmp_path, db, {"max_wal_bytes": 4096, "max_freelist_ratio": 0.5})
    m = _maintainer(live, registry, maintainers)
    spec = live.now.runtime.databases["user"]
    m.checked((check_database(spec, integrity="quick", timeout_s=5),))
    assert _sample(registry, "maintenance_max_freelist_ratio", database="user") == 0.5
    assert _sample(registry, "maintenance_max_wal_bytes", database="user") == 4096
    config = tmp_path / "plain.yaml"
    config.write_text(
        f"backup_dir: {tmp_path / 'backups'}\ndatabases:\n  user: {{path: {db}}}\n"
        "policies:\n  nightly: {keep: 3}\n"
    )
    settings, paths = load_configuration(config, environ={}, cwd=tmp_path)
    live.now = Configured.of(settings, paths)
    m.checked((check_database(spec, integrity="quick", timeout_s=5),))
    wait_until(m.idle, what="maintenance idle")
    for name in ("maintenance_max_freelist_ratio", "maintenance_max_wal_bytes"):
        assert registry.get_sample_value(f"backup_sidecar_{name}", {"database": "user"}) is None


def test_a_checkpoint_held_off_by_a_reader_gives_up_within_the_writers_bound(
    tmp_path: Path, registry: CollectorRegistry, maintainers: list[Maintainer]
) -> None:
    """The application holds a read transaction open, so TRUNCATE cannot finish: the
    checkpoint (which keeps new writers out while it waits) gives up after max_writer_wait and
    says busy; the writer, committing throughout, never waited much past that bound and saw
    no error; the reader's snapshot is untouched."""
    db = tmp_path / "user.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE big (body BLOB)")
    for _ in range(32):
        conn.execute("INSERT INTO big VALUES (randomblob(65536))")
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute("BEGIN")
    seen = reader.execute("SELECT count(*) FROM big").fetchone()
    writer = Writer.start(db, rate=100)
    bound = 1.0
    try:
        live = _live(tmp_path, db, {"max_wal_bytes": 65536, "max_writer_wait": f"{bound:g}s"})
        m = _maintainer(live, registry, maintainers)
        spec = live.now.runtime.databases["user"]
        with capture_logs() as logs:
            m.checked((check_database(spec, integrity="quick", timeout_s=5),))
            wait_until(m.idle, what="checkpoint finished")
        done = [e for e in logs if e["event"] == "maintenance_completed"]
        assert done, logs
        assert done[0]["busy"] is True
        assert bound * 0.9 <= done[0]["duration_s"] < bound + 2.0
        assert reader.execute("SELECT count(*) FROM big").fetchone() == seen
    finally:
        report = writer.stop()
        writer.close()
        reader.execute("COMMIT")
        reader.close()
        conn.close()
    assert report["errors"] == 0 and report["commits"] > 0
    assert report["max_latency_s"] < bound + 1.0
