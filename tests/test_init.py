"""`init`: the seed's startup rules (directories, integrity checks, creation, import control)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from backup_sidecar.appdata.demo_data import SYNTHETIC_ARROWS
from backup_sidecar.appdata.import_rules import import_skip_reason
from backup_sidecar.appdata.schema import create_empty_database
from backup_sidecar.appdata.startup import DatabaseStatus, InitReport, run_init
from backup_sidecar.archiver.model import DatabaseSpec
from backup_sidecar.errors import UsageError
from support.cli import Sidecar
from support.databases import count, rows_of
from support.paths import FIXTURES

SCRAPER_FILES = sorted(FIXTURES.glob("*_update_*.json"))
REAL_DB = FIXTURES / "arrow_database_2025-08-14.db"

PRODUCTION = {"FLASK_ENV": "production"}
SKIP_TEXT = "skipping database import in production"


@pytest.fixture
def scraper_files() -> list[Path]:
    """The four real scraper JSON files (read only)."""
    if len(SCRAPER_FILES) != 4:
        pytest.skip(f"real ArrowTuner scraper JSON not found in {FIXTURES}")
    return SCRAPER_FILES


@pytest.fixture
def production_arrow_db(tmp_path: Path) -> Path:
    """A copy of the real production arrow database (262 arrows, rollback journal)."""
    if not REAL_DB.is_file():
        pytest.skip(f"real ArrowTuner database not found at {REAL_DB}")
    path = tmp_path / "arrow_data" / "arrow_database.db"
    path.parent.mkdir()
    shutil.copy(REAL_DB, path)
    path.chmod(0o644)
    return path


def specs(tmp_path: Path, arrow: Path | None = None) -> list[DatabaseSpec]:
    return [
        DatabaseSpec("arrow", arrow or tmp_path / "arrow_data" / "arrow_database.db"),
        DatabaseSpec("user", tmp_path / "user_data" / "user_data.db"),
    ]


def outcome(report: InitReport, name: str) -> DatabaseStatus:
    return next(d.status for d in report.databases if d.name == name)


def tables(path: Path) -> set[str]:
    return {r[0] for r in rows_of(path, "SELECT name FROM sqlite_master WHERE type='table'")}


def arrow_count(path: Path) -> int:
    return count(path, "SELECT count(*) FROM arrows")


def test_missing_databases_and_directories_are_created(tmp_path: Path) -> None:
    """On a fresh volume init creates the database directories, the backup directory and
    both databases with the app schema."""
    backup_dir = tmp_path / "backups" / "nested"
    report = run_init(specs(tmp_path), backup_dir=backup_dir, environ={})
    assert report.ok
    assert backup_dir.is_dir()
    assert set(report.created_dirs) == {
        tmp_path / "arrow_data",
        tmp_path / "user_data",
        backup_dir,
    }
    assert outcome(report, "arrow") is DatabaseStatus.CREATED
    assert outcome(report, "user") is DatabaseStatus.CREATED
    assert {"arrows", "spine_specifications"} <= tables(tmp_path / "arrow_data/arrow_database.db")
    assert {"users", "bow_setups", "guide_sessions"} <= tables(tmp_path / "user_data/user_data.db")
    again = run_init(specs(tmp_path), backup_dir=backup_dir, environ={})
    assert {d.status for d in again.databases} == {DatabaseStatus.EXISTS_OK}
    assert again.created_dirs == ()


@pytest.mark.parametrize("force", [False, True], ids=["not-forced", "forced"])
def test_production_with_missing_empty_and_nonempty_databases(
    tmp_path: Path, production_arrow_db: Path, scraper_files: list[Path], force: bool
) -> None:
    """In production a non-empty database is never touched (byte-identical, not imported
    into unless FORCE_DATABASE_IMPORT=true), a zero-length one gets the schema, a missing one
    is created; without the force flag the skip message appears exactly once."""
    environ = {**PRODUCTION, **({"FORCE_DATABASE_IMPORT": "true"} if force else {})}
    user_db = tmp_path / "user_data" / "user_data.db"
    user_db.parent.mkdir()
    user_db.touch()  # zero-length: an empty database
    other = DatabaseSpec("arrow", tmp_path / "fresh" / "arrow_database.db")
    original = production_arrow_db.read_bytes()

    report = run_init(
        [DatabaseSpec("arrow", production_arrow_db), DatabaseSpec("user", user_db)],
        backup_dir=tmp_path / "backups",
        environ=environ,
        import_files=scraper_files,
    )
    missing = run_init([other], backup_dir=tmp_path / "backups", environ=environ)

    assert report.ok and report.production
    assert report.environment == "FLASK_ENV=production"
    assert outcome(report, "user") is DatabaseStatus.INITIALISED
    assert {"users", "bow_setups", "guide_sessions"} <= tables(user_db)
    assert outcome(missing, "arrow") is DatabaseStatus.CREATED
    assert "arrows" in tables(other.path)
    arrow = next(d for d in report.databases if d.name == "arrow")
    assert arrow.status is DatabaseStatus.EXISTS_OK
    assert arrow.detail == "ok"
    skips = [m for m in report.messages if SKIP_TEXT in m]
    if force:
        assert skips == []
        assert report.import_forced
        assert arrow.imported is not None and arrow.imported.changed
        assert production_arrow_db.read_bytes() != original
    else:
        assert len(skips) == 1
        assert "FORCE_DATABASE_IMPORT=true" in skips[0]
        assert "backup/restore" in skips[0]
        assert arrow.imported is None
        assert production_arrow_db.read_bytes() == original
        assert sorted(p.name for p in production_arrow_db.parent.iterdir()) == ["arrow_database.db"]


@pytest.mark.parametrize("var", ["FLASK_ENV", "APP_ENV"])
def test_either_variable_means_production(
    tmp_path: Path, scraper_files: list[Path], var: str
) -> None:
    """APP_ENV=production counts like FLASK_ENV=production: the new database is created but
    stays empty of arrows."""
    report = run_init(
        specs(tmp_path),
        backup_dir=tmp_path / "b",
        environ={var: "Production"},
        import_files=scraper_files,
    )
    assert report.production
    assert arrow_count(tmp_path / "arrow_data" / "arrow_database.db") == 0
    assert sum(SKIP_TEXT in m for m in report.messages) == 1


def test_development_imports_and_reports_counts(tmp_path: Path, scraper_files: list[Path]) -> None:
    """Outside production init imports the arrow JSON into the new arrow database, and a
    second init imports nothing new."""
    environ = {"FLASK_ENV": "development"}
    report = run_init(
        specs(tmp_path), backup_dir=tmp_path / "b", environ=environ, import_files=scraper_files
    )
    arrow = next(d for d in report.databases if d.name == "arrow")
    assert not report.production and report.messages == ()
    assert arrow.imported is not None and arrow.imported.arrows.inserted == 89
    assert arrow_count(arrow.path) == 89
    again = run_init(
        specs(tmp_path), backup_dir=tmp_path / "b", environ=environ, import_files=scraper_files
    )
    second = next(d for d in again.databases if d.name == "arrow")
    assert second.imported is not None and not second.imported.changed


def test_corrupted_database_is_reported_and_left_alone(tmp_path: Path) -> None:
    """A database whose pages are damaged fails integrity_check: reported with SQLite's
    result, the report is not ok, the file is unchanged and nothing is imported into it."""
    path = tmp_path / "arrow_data" / "arrow_database.db"
    path.parent.mkdir()
    create_empty_database(path, "arrow")
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO arrows (manufacturer, model_name) VALUES (?, ?)",
            [(f"M{i}", f"model {i}" * 20) for i in range(400)],
        )
    conn.close()
    conn = sqlite3.connect(path)
    (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'arrows'").fetchone()
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    data = bytearray(path.read_bytes())
    start = (root - 1) * page_size
    data[start + 12 : start + 400] = bytes([0x5A]) * 388  # the table root's cell pointers
    path.write_bytes(bytes(data))
    damaged = path.read_bytes()

    report = run_init(specs(tmp_path, path), backup_dir=tmp_path / "b", environ={})
    arrow = next(d for d in report.databases if d.name == "arrow")
    assert arrow.status is DatabaseStatus.INTEGRITY_FAILED
    assert "On tree page" in arrow.detail
    assert "\n" not in arrow.detail
    assert not report.ok and report.failed == (arrow,)
    assert outcome(report, "user") is DatabaseStatus.CREATED
    assert path.read_bytes() == damaged


def test_file_that_is_not_a_database_fails_the_check(tmp_path: Path) -> None:
    """A non-SQLite file at the database path is reported, not overwritten, not raised."""
    path = tmp_path / "user_data.db"
    path.write_bytes(b"this is not sqlite" * 300)
    report = run_init([DatabaseSpec("user", path)], backup_dir=tmp_path / "b", environ={})
    (user,) = report.databases
    assert user.status is DatabaseStatus.INTEGRITY_FAILED
    assert "not a database" in user.detail
    assert path.read_bytes() == b"this is not sqlite" * 300


def test_zero_length_database_with_a_wal_is_refused(tmp_path: Path) -> None:
    """A zero-length file beside a non-empty -wal is not opened (SQLite would delete the WAL):
    refused, both files untouched, the report not ok."""
    path = tmp_path / "user_data.db"
    path.touch()
    wal = tmp_path / "user_data.db-wal"
    wal.write_bytes(b"\x37\x7f\x06\x82" + bytes(60))
    report = run_init([DatabaseSpec("user", path)], backup_dir=tmp_path / "b", environ={})
    (user,) = report.databases
    assert user.status is DatabaseStatus.REFUSED
    assert "-wal" in user.detail
    assert not report.ok
    assert path.stat().st_size == 0
    assert wal.read_bytes() == b"\x37\x7f\x06\x82" + bytes(60)


def test_unknown_database_name_is_not_created(tmp_path: Path) -> None:
    """A database of another application has no schema here: init leaves its creation to
    the application and says so."""
    path = tmp_path / "orders" / "orders.db"
    report = run_init([DatabaseSpec("orders", path)], backup_dir=tmp_path / "b", environ={})
    assert outcome(report, "orders") is DatabaseStatus.MISSING
    assert report.ok
    assert path.parent.is_dir() and not path.exists()


def test_import_without_an_arrow_database_is_a_usage_error(tmp_path: Path) -> None:
    """Asking for an arrow import with no database named 'arrow' fails before any change."""
    with pytest.raises(UsageError, match="'arrow'"):
        run_init(
            [DatabaseSpec("user", tmp_path / "u" / "user_data.db")],
            backup_dir=tmp_path / "b",
            environ={},
            import_files=[tmp_path / "x.json"],
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("environ", "skips"),
    [
        ({}, False),
        ({"FLASK_ENV": "development"}, False),
        ({"FLASK_ENV": "production"}, True),
        ({"APP_ENV": " production "}, True),
        ({"FLASK_ENV": "production", "FORCE_DATABASE_IMPORT": "true"}, False),
        ({"APP_ENV": "production", "FORCE_DATABASE_IMPORT": "TRUE"}, False),
        ({"FLASK_ENV": "production", "FORCE_DATABASE_IMPORT": "false"}, True),
        ({"FLASK_ENV": "production", "FORCE_DATABASE_IMPORT": ""}, True),
    ],
)
def test_import_rule(environ: dict[str, str], skips: bool) -> None:
    """The one rule `init` and `import-arrows` share: no import in production unless
    FORCE_DATABASE_IMPORT is true; the reason names the variable and the way out."""
    reason = import_skip_reason(environ)
    assert bool(reason) is skips
    if skips:
        assert "production" in reason and "FORCE_DATABASE_IMPORT=true" in reason


def test_header_only_database_gets_the_schema(tmp_path: Path) -> None:
    """A database file SQLite has initialised but that holds no schema object at all (the app
    died right after opening it) counts as empty: the schema is written in place."""
    path = tmp_path / "user_data.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=wal")  # writes the 1-page header, no tables
    conn.close()
    assert path.stat().st_size > 0
    report = run_init([DatabaseSpec("user", path)], backup_dir=tmp_path / "b", environ={})
    assert outcome(report, "user") is DatabaseStatus.INITIALISED
    assert {"users", "bow_setups", "guide_sessions"} <= tables(path)


def test_database_with_any_table_is_never_written(tmp_path: Path) -> None:
    """A database with even one unrelated table is the application's: no app tables are
    added, its bytes stay identical, and it is reported as exists_ok."""
    path = tmp_path / "arrow_database.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE legacy (x)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    report = run_init([DatabaseSpec("arrow", path)], backup_dir=tmp_path / "b", environ={})
    assert outcome(report, "arrow") is DatabaseStatus.EXISTS_OK
    assert tables(path) == {"legacy"}
    assert path.read_bytes() == before


@pytest.mark.parametrize("force", [False, True], ids=["not-forced", "forced"])
def test_init_logs_a_forced_import_as_forced(
    tmp_path: Path, sidecar_env: Callable[..., Sidecar], force: bool
) -> None:
    """`init --import` in production (the real CLI, JSON logs): without the force flag it logs
    `import_skipped` once and imports nothing; with FORCE_DATABASE_IMPORT=true it imports and
    logs `import_forced`, never `import_skipped` (the forced import was logged as skipped)."""
    doc = tmp_path / "scraper.json"
    doc.write_text(json.dumps(SYNTHETIC_ARROWS[0]))
    arrow = tmp_path / "arrow_data" / "arrow_database.db"
    extra = {"FLASK_ENV": "production", **({"FORCE_DATABASE_IMPORT": "true"} if force else {})}
    sidecar = sidecar_env(arrow=arrow, user=tmp_path / "user_data" / "user_data.db", **extra)
    done = sidecar.run("init", "--import", str(doc))
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in (done.stdout + done.stderr).splitlines() if line]
    events = [r["event"] for r in records]
    if force:
        assert events.count("import_forced") == 1, events
        assert "import_skipped" not in events, events
        assert arrow_count(arrow) == len(SYNTHETIC_ARROWS[0]["arrows"])
    else:
        assert events.count("import_skipped") == 1, events
        assert "import_forced" not in events, events
        assert arrow_count(arrow) == 0


def test_a_fifo_database_is_refused_by_init_and_backup(
    tmp_path: Path, sidecar_env: Callable[..., Sidecar]
) -> None:
    """Outside attack 1, finding 6: `init` (so `start`) never finished when a database path was
    a FIFO (SQLite's open waits for a writer), and `backup --db` called it "empty (0 bytes)".
    Both now refuse at once, naming the database, the path and what it is (the health check's
    words); the other database is still initialised, and nothing is archived."""
    fifo = tmp_path / "user_data" / "user_data.db"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    arrow = tmp_path / "arrow_data" / "arrow_database.db"
    sidecar = sidecar_env(arrow=arrow, user=fifo)
    init = sidecar.run("init", timeout=30)
    assert init.returncode == 1, init.stderr
    records = [json.loads(line) for line in init.stderr.splitlines() if line.startswith("{")]
    (refused,) = [r for r in records if r.get("database") == "user"]
    assert refused["status"] == "refused", refused
    assert refused["path"] == str(fifo)
    assert refused["detail"].startswith("not a regular file (a FIFO)"), refused
    assert arrow.is_file()

    backup = sidecar.run("backup", "--db", "user", timeout=30)
    assert backup.returncode == 1, backup.stderr
    errors = [ln for ln in backup.stderr.splitlines() if not ln.startswith("{")]
    assert errors == [
        f"backup-sidecar: error: database 'user' ({fifo}): not a regular file (a FIFO)"
    ], backup.stderr
    assert not list(sidecar.backup_dir.glob("*.tar.gz"))
