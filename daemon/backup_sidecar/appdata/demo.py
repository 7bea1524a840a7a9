"""Demo ArrowTuner databases for `make demo`: real arrow data where available, demo users.

Under ``root``: ``databases/arrow_database.db`` imported from the four real scraper files (or a
small synthetic set when the fixtures are absent), ``databases/user_data.db`` with demo users,
bow setups and guide sessions, and an empty ``backups/``. Running it again adds nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from backup_sidecar.appdata.arrows_import import (
    ImportReport,
    import_arrow_documents,
    import_arrows,
)
from backup_sidecar.appdata.demo_data import DEMO_USERS, SYNTHETIC_ARROWS, DemoUser
from backup_sidecar.appdata.schema import BUSY_TIMEOUT_S, create_empty_database
from backup_sidecar.errors import UsageError

ARROW_FILE = "arrow_database.db"
USER_FILE = "user_data.db"
FIXTURE_GLOB = "*_update_*.json"


@dataclass(frozen=True)
class DemoLayout:
    """Where the demo put things, and where its arrow data came from."""

    root: Path
    databases_dir: Path
    arrow_db: Path
    user_db: Path
    backup_dir: Path
    #: "fixtures" (the real scraper JSON) or "synthetic".
    arrow_source: str
    arrow_import: ImportReport
    notes: tuple[str, ...] = ()


def default_fixtures_dir() -> Path | None:
    """``../shared/fixtures/arrowtuner`` beside the project root of a checkout, if it is there."""
    project_root = Path(__file__).resolve().parents[3]
    candidate = project_root.parent / "shared" / "fixtures" / "arrowtuner"
    if (project_root / "pyproject.toml").is_file() and any(candidate.glob(FIXTURE_GLOB)):
        return candidate
    return None


def build_demo(
    root: Path, *, fixtures_dir: Path | None = None, synthetic: bool = False
) -> DemoLayout:
    """Create (or top up) the demo databases under ``root``; idempotent.

    ``fixtures_dir`` None means :func:`default_fixtures_dir`; when that finds nothing, or with
    ``synthetic=True``, a small deterministic arrow set is used and a note says so. An explicit
    ``fixtures_dir`` without scraper files is a usage error.
    """
    files = [] if synthetic else _fixture_files(fixtures_dir)  # refuse before creating anything
    databases_dir, backup_dir = root / "databases", root / "backups"
    for directory in (databases_dir, backup_dir):
        directory.mkdir(parents=True, exist_ok=True)
    arrow_db, user_db = databases_dir / ARROW_FILE, databases_dir / USER_FILE
    if not arrow_db.exists():
        create_empty_database(arrow_db, "arrow")
    if not user_db.exists():
        create_empty_database(user_db, "user")
    notes: list[str] = []
    if files:
        report, source = import_arrows(arrow_db, files), "fixtures"
    else:
        documents = [(f"<synthetic {doc['manufacturer']}>", doc) for doc in SYNTHETIC_ARROWS]
        report, source = import_arrow_documents(arrow_db, documents), "synthetic"
        notes.append(
            "real ArrowTuner fixtures not found (../shared/fixtures/arrowtuner): "
            "using a small synthetic arrow set"
        )
    _populate_users(user_db, arrow_db)
    return DemoLayout(
        root=root,
        databases_dir=databases_dir,
        arrow_db=arrow_db,
        user_db=user_db,
        backup_dir=backup_dir,
        arrow_source=source,
        arrow_import=report,
        notes=tuple(notes),
    )


def _fixture_files(fixtures_dir: Path | None) -> list[Path]:
    if fixtures_dir is None:
        found = default_fixtures_dir()
        return sorted(found.glob(FIXTURE_GLOB)) if found else []
    files = sorted(fixtures_dir.glob(FIXTURE_GLOB))
    if not files:
        raise UsageError(f"no scraper files ({FIXTURE_GLOB}) in fixtures directory {fixtures_dir}")
    return files


def _populate_users(user_db: Path, arrow_db: Path) -> None:
    """Insert the demo users and what hangs off them, each keyed on a natural key."""
    arrows = _arrow_ids(arrow_db)
    conn = sqlite3.connect(user_db, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("BEGIN IMMEDIATE")
        for user in DEMO_USERS:
            _add_user(conn, user, arrows)
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


def _arrow_ids(arrow_db: Path) -> list[int]:
    # Not read-only: the last connection to close tidies the WAL's -wal and -shm away.
    conn = sqlite3.connect(arrow_db, timeout=BUSY_TIMEOUT_S)
    try:
        return [int(r[0]) for r in conn.execute("SELECT id FROM arrows ORDER BY id")]
    finally:
        conn.close()


def _add_user(conn: sqlite3.Connection, user: DemoUser, arrows: list[int]) -> None:
    user_id = _ensure(
        conn,
        "users",
        {"google_id": user.google_id},
        {"email": user.email, "name": user.name, "is_admin": user.is_admin},
    )
    for n, setup in enumerate(user.setups):
        setup_id = _ensure(
            conn, "bow_setups", {"user_id": user_id, "name": setup.name}, setup.values()
        )
        if arrows:
            arrow_id = arrows[(user_id * 7 + n * 13) % len(arrows)]
            key = {
                "setup_id": setup_id,
                "arrow_id": arrow_id,
                "arrow_length": setup.arrow_length,
                "point_weight": setup.point_weight,
            }
            _ensure(conn, "setup_arrows", key, {"calculated_spine": setup.spine})
        for guide in setup.guides:
            session_key = {"user_id": user_id, "bow_setup_id": setup_id, "guide_name": guide.name}
            session_id = _ensure(conn, "guide_sessions", session_key, guide.values())
            for step, (step_name, result) in enumerate(guide.steps, start=1):
                key = {"session_id": session_id, "step_number": step}
                _ensure(
                    conn,
                    "guide_step_results",
                    key,
                    {"step_name": step_name, "result_value": result},
                )


def _ensure(
    conn: sqlite3.Connection, table: str, key: Mapping[str, object], values: Mapping[str, object]
) -> int:
    """The id of the row with ``key``, inserting it with ``values`` if there is none."""
    where = " AND ".join(f'"{k}" = ?' for k in key)
    row = conn.execute(f'SELECT id FROM "{table}" WHERE {where}', tuple(key.values())).fetchone()
    if row is not None:
        return int(row[0])
    cols = {**key, **values}
    names = ", ".join(f'"{c}"' for c in cols)
    marks = ", ".join("?" for _ in cols)
    cur = conn.execute(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', tuple(cols.values()))
    return int(cur.lastrowid or 0)
