"""ArrowTuner application data: schema creation, the arrow JSON import and the demo layout."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from backup_sidecar.appdata.arrows_import import import_arrows
from backup_sidecar.appdata.demo import build_demo
from backup_sidecar.appdata.schema import (
    ARROW_SCHEMA,
    create_empty_database,
)
from backup_sidecar.errors import (
    ArrowDataError,
    DatabaseError,
    DatabaseExistsError,
    UnknownDatabaseError,
    UsageError,
)
from support.databases import count, dump, rows_of
from support.paths import FIXTURES

SCRAPER_FILES = sorted(FIXTURES.glob("*_update_*.json"))
REAL_DB = FIXTURES / "arrow_database_2025-08-14.db"
MANUFACTURERS = {"Easton Archery", "Gold Tip", "Victory Archery", "Carbon Express"}

needs_fixtures = pytest.mark.skipif(
    len(SCRAPER_FILES) != 4 or not REAL_DB.is_file(),
    reason=f"real ArrowTuner fixtures not found in {FIXTURES} (../shared/fixtures/arrowtuner)",
)


def manufacturers(path: Path) -> set[str]:
    return {r[0] for r in rows_of(path, "SELECT DISTINCT manufacturer FROM arrows")}


@pytest.fixture
def fresh_db(tmp_path: Path) -> Path:
    """A fresh arrow database with the app schema."""
    path = tmp_path / "arrow_database.db"
    create_empty_database(path, "arrow")
    return path


@pytest.fixture
def scraper_copy(tmp_path: Path) -> Path:
    """A private copy of the real scraper files (fixtures are never modified in place)."""
    if len(SCRAPER_FILES) != 4:
        pytest.skip(f"real ArrowTuner scraper JSON not found in {FIXTURES}")
    target = tmp_path / "scraper"
    target.mkdir()
    for f in SCRAPER_FILES:
        shutil.copy(f, target / f.name)
    return target


# --- schema -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["arrow", "user"])
def test_create_empty_database_builds_the_schema_in_wal(tmp_path: Path, kind: str) -> None:
    """A created database has the app's tables, is in WAL mode, passes integrity_check, and
    leaves no temporary file, -wal or -shm beside it."""
    path = tmp_path / f"{kind}.db"
    create_empty_database(path, kind)  # type: ignore[arg-type]
    conn = sqlite3.connect(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()
    expected = (
        {"arrows", "spine_specifications", "manufacturers"}
        if kind == "arrow"
        else {"users", "bow_setups", "guide_sessions", "guide_step_results", "setup_arrows"}
    )
    assert expected <= tables
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@needs_fixtures
def test_arrow_schema_matches_the_production_tables() -> None:
    """Our arrows/spine_specifications DDL has exactly the production database's columns (same
    order, types, NOT NULL) and its indexes, so imported databases look like the app's own."""
    ours = sqlite3.connect(":memory:")
    for statement in ARROW_SCHEMA:
        ours.execute(statement)
    real = sqlite3.connect(f"{REAL_DB.as_uri()}?mode=ro", uri=True)
    try:
        for table in ("arrows", "spine_specifications", "manufacturers"):
            info = f'PRAGMA table_info("{table}")'
            assert ours.execute(info).fetchall() == real.execute(info).fetchall(), table
            indexes = f'PRAGMA index_list("{table}")'
            assert sorted(r[1:] for r in ours.execute(indexes)) == sorted(
                r[1:] for r in real.execute(indexes)
            ), table
    finally:
        ours.close()
        real.close()


def test_create_empty_database_never_overwrites(tmp_path: Path) -> None:
    """An existing file (even a zero-length one) is refused and left byte-identical."""
    path = tmp_path / "user_data.db"
    path.write_bytes(b"precious bytes")
    with pytest.raises(DatabaseExistsError, match="already exists"):
        create_empty_database(path, "user")
    assert path.read_bytes() == b"precious bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_create_empty_database_rejects_an_unknown_kind(tmp_path: Path) -> None:
    """Only the arrow and user schemas exist; anything else is a usage error, nothing created."""
    with pytest.raises(UnknownDatabaseError):
        create_empty_database(tmp_path / "x.db", "orders")  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())


# --- arrow import -----------------------------------------------------------------------------


@needs_fixtures
def test_import_of_real_scraper_files(fresh_db: Path) -> None:
    """All four real files import: every arrow and spine lands, keyed by manufacturer."""
    report = import_arrows(fresh_db, SCRAPER_FILES)
    makers = count(fresh_db, "SELECT count(DISTINCT manufacturer) FROM arrows")
    assert makers == 4
    assert report.arrows.inserted == count(fresh_db, "SELECT count(*) FROM arrows") == 89
    assert report.spines.inserted == count(fresh_db, "SELECT count(*) FROM spine_specifications")
    assert {f.manufacturer for f in report.files} == MANUFACTURERS
    # Easton's file lists "X7 Eclipse" twice: merged, the later listing wins.
    easton = next(f for f in report.files if f.manufacturer == "Easton Archery")
    assert easton.duplicates_merged == 1
    conn = sqlite3.connect(fresh_db)
    try:
        row = conn.execute(
            "SELECT material, image_url FROM arrows WHERE model_name = 'X7 Eclipse'"
        ).fetchone()
        gold_tip = conn.execute(
            "SELECT count(*) FROM arrows WHERE manufacturer = 'Gold Tip' AND image_url LIKE 'http%'"
        ).fetchone()[0]
        lengths = conn.execute(
            "SELECT length_options FROM spine_specifications s JOIN arrows a ON a.id = s.arrow_id"
            " WHERE a.manufacturer = 'Gold Tip' LIMIT 1"
        ).fetchone()[0]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()
    assert row == ("Carbon", None)
    assert gold_tip == 32  # primary_image_url -> image_url
    assert isinstance(json.loads(lengths), list)


@needs_fixtures
def test_importing_twice_changes_nothing(fresh_db: Path) -> None:
    """A second import of the same files reports everything unchanged and leaves the full
    SQL dump (rows, ids and sqlite_sequence) identical."""
    import_arrows(fresh_db, SCRAPER_FILES)
    before = dump(fresh_db)
    again = import_arrows(fresh_db, SCRAPER_FILES)
    assert dump(fresh_db) == before
    assert again.arrows.inserted == again.arrows.updated == 0
    assert again.spines.inserted == again.spines.updated == 0
    assert again.arrows.unchanged == 89
    assert not again.changed


@needs_fixtures
def test_import_into_a_copy_of_the_production_database(tmp_path: Path) -> None:
    """The importer upserts into the real app database: existing arrows are updated in place
    (no duplicates), and a second run changes nothing."""
    db = tmp_path / "arrow_database.db"
    shutil.copy(REAL_DB, db)
    db.chmod(0o644)
    arrows_before = count(db, "SELECT count(*) FROM arrows")
    first = import_arrows(db, SCRAPER_FILES)
    assert first.arrows.updated > 0
    assert count(db, "SELECT count(*) FROM arrows") == arrows_before + first.arrows.inserted
    assert (
        count(
            db,
            "SELECT count(*) FROM (SELECT 1 FROM arrows GROUP BY manufacturer, "
            "model_name HAVING count(*) > 1)",
        )
        == 0
    )
    before = dump(db)
    assert not import_arrows(db, SCRAPER_FILES).changed
    assert dump(db) == before


@needs_fixtures
def test_changed_values_are_updated_not_duplicated(fresh_db: Path, scraper_copy: Path) -> None:
    """Editing one spine's weight in the JSON updates exactly that row on re-import."""
    files = sorted(scraper_copy.glob("*.json"))
    import_arrows(fresh_db, files)
    victory = next(f for f in files if f.name.startswith("Victory"))
    doc = json.loads(victory.read_text())
    doc["arrows"][0]["spine_specifications"][0]["gpi_weight"] = 99.5
    victory.write_text(json.dumps(doc))
    report = import_arrows(fresh_db, [victory])
    assert report.spines.updated == 1
    assert report.spines.inserted == report.arrows.inserted == report.arrows.updated == 0
    assert count(fresh_db, "SELECT count(*) FROM spine_specifications WHERE gpi_weight = 99.5") == 1


@pytest.mark.parametrize(
    ("mutate", "key_path"),
    [
        (
            lambda d: d["arrows"][2]["spine_specifications"][1].update(gpi_weight="heavy"),
            "arrows[2].spine_specifications[1].gpi_weight",
        ),
        (lambda d: d["arrows"][4].pop("model_name"), "arrows[4].model_name"),
        (
            lambda d: d["arrows"][1]["spine_specifications"][0].update(spine=None),
            "arrows[1].spine_specifications[0].spine",
        ),
        (lambda d: d.update(arrows={"not": "a list"}), "arrows"),
    ],
    ids=["bad-gpi", "no-model", "no-spine", "arrows-not-list"],
)
def test_malformed_file_names_file_and_key_path_and_writes_nothing(
    fresh_db: Path, scraper_copy: Path, mutate: object, key_path: str
) -> None:
    """A bad value anywhere raises one line naming the file and the JSON key path; no file
    of the batch is written, not even the good ones before it."""
    files = sorted(scraper_copy.glob("*.json"))
    bad = files[-1]
    doc = json.loads(bad.read_text())
    mutate(doc)  # type: ignore[operator]
    bad.write_text(json.dumps(doc))
    before = dump(fresh_db)
    with pytest.raises(ArrowDataError) as info:
        import_arrows(fresh_db, files)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{bad}: {key_path}: ")
    assert info.value.key_path == key_path
    assert isinstance(info.value, UsageError)
    assert dump(fresh_db) == before


def test_invalid_json_syntax_names_file_and_line(fresh_db: Path, tmp_path: Path) -> None:
    """A file that is not JSON at all is reported with its path and the line of the fault."""
    bad = tmp_path / "Broken_update_20250801.json"
    bad.write_text('{"manufacturer": "X",\n "arrows": [\n')
    before = dump(fresh_db)
    with pytest.raises(ArrowDataError, match=rf"^{bad}: invalid JSON at line 3 column 1"):
        import_arrows(fresh_db, [bad])
    assert dump(fresh_db) == before


def test_import_needs_an_arrow_database(tmp_path: Path) -> None:
    """Importing into a missing file or a database without the arrow tables is refused."""
    doc = tmp_path / "a.json"
    doc.write_text(json.dumps({"manufacturer": "M", "arrows": []}))
    with pytest.raises(DatabaseError, match="does not exist"):
        import_arrows(tmp_path / "nope.db", [doc])
    create_empty_database(tmp_path / "user.db", "user")
    with pytest.raises(DatabaseError, match="no table 'arrows'"):
        import_arrows(tmp_path / "user.db", [doc])


# --- demo -------------------------------------------------------------------------------------


@needs_fixtures
def test_demo_builds_both_databases_from_real_data_idempotently(tmp_path: Path) -> None:
    """The demo imports all four manufacturers' real arrows and demo users with setups and
    guide sessions; a second run leaves both databases' dumps identical."""
    root = tmp_path / "var"
    layout = build_demo(root, fixtures_dir=FIXTURES)
    assert layout.arrow_source == "fixtures"
    assert layout.arrow_db == root / "databases" / "arrow_database.db"
    assert layout.user_db == root / "databases" / "user_data.db"
    assert layout.backup_dir.is_dir()
    assert manufacturers(layout.arrow_db) == MANUFACTURERS
    for table in ("users", "bow_setups", "guide_sessions", "guide_step_results", "setup_arrows"):
        assert count(layout.user_db, f"SELECT count(*) FROM {table}") > 0, table
    dumps = dump(layout.arrow_db), dump(layout.user_db)
    again = build_demo(root, fixtures_dir=FIXTURES)
    assert not again.arrow_import.changed
    assert (dump(layout.arrow_db), dump(layout.user_db)) == dumps


def test_demo_without_fixtures_uses_a_synthetic_set(tmp_path: Path) -> None:
    """Without the real files the demo still has four manufacturers, says so in a note, and
    is idempotent."""
    layout = build_demo(tmp_path, fixtures_dir=None, synthetic=True)
    assert layout.arrow_source == "synthetic"
    assert any("synthetic" in note for note in layout.notes)
    assert count(layout.arrow_db, "SELECT count(DISTINCT manufacturer) FROM arrows") == 4
    dumps = dump(layout.arrow_db), dump(layout.user_db)
    build_demo(tmp_path, fixtures_dir=None, synthetic=True)
    assert (dump(layout.arrow_db), dump(layout.user_db)) == dumps


def test_demo_with_an_empty_fixtures_dir_is_a_usage_error(tmp_path: Path) -> None:
    """An explicit fixtures directory without scraper files is named in the error."""
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match=str(empty)):
        build_demo(tmp_path / "var", fixtures_dir=empty)
    assert not (tmp_path / "var").exists()
