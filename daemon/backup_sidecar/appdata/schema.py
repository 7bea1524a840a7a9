"""ArrowTuner's database schemas as DDL, and creating an empty database without ever replacing one.

The arrow tables are the ones the importer writes, taken column for column (same order) from the
production arrow database (``arrow_database_2025-08-14.db``), so an imported database has the
layout the app expects. The user schema is ArrowTuner's user side: accounts, bow setups, the
arrows chosen for them, and guided tuning sessions.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from pathlib import Path
from typing import Literal

from backup_sidecar.archiver.staging import fsync_dir
from backup_sidecar.errors import DatabaseError, DatabaseExistsError, UnknownDatabaseError

DatabaseKind = Literal["arrow", "user"]

#: Seconds a schema write waits for another connection's lock before giving up.
BUSY_TIMEOUT_S = 10.0

ARROW_SCHEMA: tuple[str, ...] = (
    """CREATE TABLE manufacturers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT UNIQUE NOT NULL,
    website_url TEXT,
    logo_url TEXT,
    description TEXT,
    country TEXT,
    established_year INTEGER,
    is_active BOOLEAN DEFAULT TRUE,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
)""",
    """CREATE TABLE arrows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    manufacturer TEXT NOT NULL,
    model_name TEXT NOT NULL,
    material TEXT,
    carbon_content TEXT,
    arrow_type TEXT,  -- target, hunting, etc.
    description TEXT,
    image_url TEXT,
    source_url TEXT,
    scraped_at TEXT,
    created_at TEXT DEFAULT CURRENT_TIMESTAMP,
    retailer_data TEXT DEFAULT NULL,
    manufacturer_id INTEGER REFERENCES manufacturers(id),
    UNIQUE(manufacturer, model_name)
)""",
    "CREATE INDEX idx_arrows_manufacturer ON arrows (manufacturer)",
    "CREATE INDEX idx_arrows_type ON arrows (arrow_type)",
    """CREATE TABLE spine_specifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    arrow_id INTEGER NOT NULL,
    spine INTEGER NOT NULL,
    outer_diameter REAL,
    gpi_weight REAL NOT NULL,
    inner_diameter REAL,
    diameter_category TEXT,  -- categorised diameter classification
    length_options TEXT,  -- JSON array of available lengths
    wall_thickness REAL,
    insert_weight_range TEXT,
    nock_size TEXT,
    notes TEXT,
    straightness_tolerance TEXT,
    weight_tolerance TEXT,
    created_at TEXT DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (arrow_id) REFERENCES arrows (id),
    UNIQUE(arrow_id, spine)
)""",
    "CREATE INDEX idx_spine_spine ON spine_specifications (spine)",
    "CREATE INDEX idx_spine_gpi ON spine_specifications (gpi_weight)",
    "CREATE INDEX idx_spine_diameter ON spine_specifications (outer_diameter)",
    "CREATE INDEX idx_spine_diameter_category ON spine_specifications (diameter_category)",
)

USER_SCHEMA: tuple[str, ...] = (
    """CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    google_id TEXT UNIQUE NOT NULL,
    email TEXT UNIQUE NOT NULL,
    name TEXT,
    profile_picture_url TEXT,
    is_admin BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TEXT DEFAULT CURRENT_TIMESTAMP
)""",
    """CREATE TABLE bow_setups (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    bow_type TEXT NOT NULL,  -- compound, recurve, longbow, traditional
    draw_weight REAL NOT NULL,
    draw_length REAL NOT NULL,
    arrow_length REAL NOT NULL,
    point_weight REAL NOT NULL,
    nock_weight REAL,
    fletching_weight REAL,
    insert_weight REAL,
    description TEXT,
    created_at TEXT DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT DEFAULT CURRENT_TIMESTAMP
)""",
    "CREATE INDEX idx_bow_setups_user_id ON bow_setups (user_id)",
    """CREATE TABLE setup_arrows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    setup_id INTEGER NOT NULL REFERENCES bow_setups (id) ON DELETE CASCADE,
    arrow_id INTEGER NOT NULL,  -- arrows.id in the arrow database (another file: no FK)
    arrow_length REAL NOT NULL,
    point_weight REAL NOT NULL,
    calculated_spine INTEGER,
    compatibility_score INTEGER,
    notes TEXT,
    created_at TEXT DEFAULT CURRENT_TIMESTAMP,
    UNIQUE(setup_id, arrow_id, arrow_length, point_weight)
)""",
    "CREATE INDEX idx_setup_arrows_setup_id ON setup_arrows (setup_id)",
    """CREATE TABLE bow_equipment (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    bow_setup_id INTEGER NOT NULL REFERENCES bow_setups (id) ON DELETE CASCADE,
    category_name TEXT NOT NULL,
    manufacturer_name TEXT,
    model_name TEXT,
    weight_grams REAL,
    specifications TEXT,  -- JSON
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at TEXT DEFAULT CURRENT_TIMESTAMP
)""",
    "CREATE INDEX idx_bow_equipment_setup ON bow_equipment (bow_setup_id, is_active)",
    """CREATE TABLE guide_sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    bow_setup_id INTEGER REFERENCES bow_setups (id) ON DELETE SET NULL,
    guide_name TEXT NOT NULL,
    guide_type TEXT NOT NULL,  -- paper_tuning, bare_shaft, walk_back, ...
    status TEXT NOT NULL DEFAULT 'in_progress'
        CHECK (status IN ('in_progress', 'paused', 'completed', 'abandoned')),
    current_step INTEGER NOT NULL DEFAULT 1,
    total_steps INTEGER NOT NULL,
    started_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    completed_at TEXT
)""",
    "CREATE INDEX idx_guide_sessions_user ON guide_sessions (user_id, status)",
    "CREATE INDEX idx_guide_sessions_setup ON guide_sessions (bow_setup_id)",
    """CREATE TABLE guide_step_results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id INTEGER NOT NULL REFERENCES guide_sessions (id) ON DELETE CASCADE,
    step_number INTEGER NOT NULL,
    step_name TEXT NOT NULL,
    result_type TEXT,
    result_value TEXT,
    measurements TEXT,  -- JSON
    notes TEXT,
    created_at TEXT DEFAULT CURRENT_TIMESTAMP,
    UNIQUE(session_id, step_number)
)""",
    """CREATE TABLE tuning_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    bow_setup_id INTEGER NOT NULL REFERENCES bow_setups (id) ON DELETE CASCADE,
    session_id INTEGER REFERENCES guide_sessions (id) ON DELETE SET NULL,
    change_type TEXT NOT NULL,
    field_name TEXT,
    old_value TEXT,
    new_value TEXT,
    reason TEXT,
    changed_at TEXT DEFAULT CURRENT_TIMESTAMP
)""",
    "CREATE INDEX idx_tuning_history_setup ON tuning_history (bow_setup_id, changed_at)",
)

SCHEMAS: dict[str, tuple[str, ...]] = {"arrow": ARROW_SCHEMA, "user": USER_SCHEMA}


def schema_for(kind: str) -> tuple[str, ...]:
    """The DDL statements of a database kind ("arrow" or "user")."""
    try:
        return SCHEMAS[kind]
    except KeyError:
        raise UnknownDatabaseError(kind, tuple(SCHEMAS)) from None


def create_empty_database(path: Path, kind: DatabaseKind) -> None:
    """Create a new database with the app schema at ``path``, in WAL mode, atomically.

    Built under a temporary name in the same directory, fsynced, then hard-linked to ``path``:
    the link fails if anything appeared at ``path`` meanwhile, so an existing file is never
    overwritten (:class:`DatabaseExistsError`), and a crash leaves no half-built database.
    """
    statements = schema_for(kind)
    if os.path.lexists(path):
        raise DatabaseExistsError(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        # O_EXCL: a planted file or symlink at the temp name is refused; 0o644 less the umask,
        # the mode SQLite itself would create the file with.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        os.close(fd)
    except OSError as exc:
        raise DatabaseError(kind, path, f"cannot create a file in {path.parent}: {exc}") from exc
    try:
        _build(tmp, statements)
        _fsync_file(tmp)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise DatabaseExistsError(path) from None
        fsync_dir(path.parent)
    except sqlite3.Error as exc:
        raise DatabaseError(kind, path, f"cannot build the schema: {exc}") from exc
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def initialise_in_place(path: Path, kind: DatabaseKind) -> bool:
    """Write the app schema into an existing database that has no schema objects at all.

    The emptiness check and the DDL run in one ``BEGIN IMMEDIATE`` transaction, so a writer
    that creates tables meanwhile wins and this returns False having changed nothing. Returns
    True when the schema was written (the file is then switched to WAL where SQLite allows).
    """
    statements = schema_for(kind)
    uri = f"{path.resolve().as_uri()}?mode=rw"
    conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        (objects,) = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if objects:
            conn.execute("ROLLBACK")
            return False
        try:
            for statement in statements:
                conn.execute(statement)
            conn.execute("COMMIT")
        except sqlite3.Error:
            conn.execute("ROLLBACK")
            raise
        # Needs no other connection to be open; if one is, the app decides its journal mode.
        with contextlib.suppress(sqlite3.OperationalError):
            conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
    return True


def _build(path: Path, statements: tuple[str, ...]) -> None:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for statement in statements:
            conn.execute(statement)
        conn.execute("COMMIT")
        # Persistent in the file header; the app runs WAL. Closing the only connection
        # checkpoints and removes the temp file's -wal and -shm.
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
