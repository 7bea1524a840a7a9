"""Upsert the arrow scraper's JSON into the arrow database, idempotently.

Every file is read (bounded, see :mod:`arrows_json`), parsed and validated before the database
is opened, so a malformed file (anywhere in the list) raises :class:`ArrowDataError` naming the
file and the JSON key path, and no file is imported. All the files are then written in one
transaction: a database error in any of them (a constraint, a full disk, a lock held past the
busy timeout) rolls back the whole batch and raises :class:`DatabaseError` naming the database
and the file it was writing; the database is as before. Arrows are keyed on
``(manufacturer, model_name)``, spines on ``(arrow_id, spine)``; a row is updated only when a
value differs, so importing the same file twice changes nothing. Keys absent from the JSON
leave the stored column alone; spines absent from the JSON are kept (an upsert, not a sync).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backup_sidecar.appdata.arrows_json import read_document
from backup_sidecar.appdata.arrows_parse import (
    ArrowRecord,
    ArrowSource,
    parse_document,
)
from backup_sidecar.appdata.schema import BUSY_TIMEOUT_S
from backup_sidecar.errors import DatabaseError

__all__ = [
    "FileImport",
    "ImportReport",
    "UpsertCounts",
    "import_arrow_documents",
    "import_arrows",
    "import_sources",
    "load_sources",
]


@dataclass(frozen=True)
class UpsertCounts:
    """Rows inserted, updated (some value differed) and unchanged (every value equal)."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    def __add__(self, other: UpsertCounts) -> UpsertCounts:
        return UpsertCounts(
            inserted=self.inserted + other.inserted,
            updated=self.updated + other.updated,
            unchanged=self.unchanged + other.unchanged,
        )

    @property
    def changed(self) -> int:
        return self.inserted + self.updated


@dataclass(frozen=True)
class FileImport:
    """What importing one file did."""

    source: str
    manufacturer: str
    arrows: UpsertCounts
    spines: UpsertCounts
    #: Arrows listed more than once in the file; the last listing wins, spines are merged.
    duplicates_merged: int = 0


@dataclass(frozen=True)
class ImportReport:
    """What an import did, per file and in total."""

    database: Path
    files: tuple[FileImport, ...] = field(default=())

    @property
    def arrows(self) -> UpsertCounts:
        return sum((f.arrows for f in self.files), UpsertCounts())

    @property
    def spines(self) -> UpsertCounts:
        return sum((f.spines for f in self.files), UpsertCounts())

    @property
    def changed(self) -> bool:
        return bool(self.arrows.changed or self.spines.changed)


def import_arrows(db_path: Path, files: Sequence[Path]) -> ImportReport:
    """Upsert scraper JSON files into the arrow database at ``db_path`` (see the module doc)."""
    return import_sources(db_path, load_sources(files))


def load_sources(files: Sequence[Path]) -> list[ArrowSource]:
    """Read and validate every file; the first fault raises :class:`ArrowDataError`."""
    return [parse_document(read_document(f), source=str(f)) for f in files]


def import_arrow_documents(db_path: Path, documents: Sequence[tuple[str, Any]]) -> ImportReport:
    """Upsert already-decoded scraper documents, each labelled with its source for errors."""
    return import_sources(db_path, [parse_document(doc, source=lbl) for lbl, doc in documents])


def import_sources(db_path: Path, sources: Sequence[ArrowSource]) -> ImportReport:
    """Write validated sources in one transaction (see the module doc)."""
    conn = _connect(db_path)
    try:
        columns = _writable_columns(conn, db_path)
        results = _import_all(conn, db_path, sources, columns)
    finally:
        conn.close()
    return ImportReport(database=db_path, files=results)


def _connect(db_path: Path) -> sqlite3.Connection:
    if not db_path.is_file():
        raise DatabaseError("arrow", db_path, "does not exist; run `backup-sidecar init` first")
    uri = f"{db_path.resolve().as_uri()}?mode=rw"
    try:
        return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        raise DatabaseError("arrow", db_path, f"cannot open: {exc}") from exc


def _writable_columns(conn: sqlite3.Connection, db_path: Path) -> dict[str, frozenset[str]]:
    """The columns each target table has, so older app schemas are written as far as they go."""
    needed = {
        "arrows": {"id", "manufacturer", "model_name"},
        "spine_specifications": {"id", "arrow_id", "spine", "gpi_weight"},
    }
    found: dict[str, frozenset[str]] = {}
    for table, required in needed.items():
        cols = frozenset(row[1] for row in conn.execute(f'PRAGMA table_info("{table}")'))
        missing = required - cols
        if missing:
            what = "no table" if not cols else f"no column(s) {', '.join(sorted(missing))} in"
            reason = f"{what} {table!r}: not an arrow database (run `backup-sidecar init`)"
            raise DatabaseError("arrow", db_path, reason)
        found[table] = cols
    return found


def _import_all(
    conn: sqlite3.Connection,
    db_path: Path,
    sources: Sequence[ArrowSource],
    columns: Mapping[str, frozenset[str]],
) -> tuple[FileImport, ...]:
    """Every source in one transaction: all of them, or (on any exception) none."""
    doing = "starting the import"
    try:
        conn.execute("BEGIN IMMEDIATE")
        results = []
        for src in sources:
            doing = f"importing {src.label}"
            results.append(_import_source(conn, src, columns))
        doing = "committing the import"
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            reason = f"{doing} failed, nothing imported (rolled back): {exc}"
            raise DatabaseError("arrow", db_path, " ".join(reason.split())) from exc
        raise
    return tuple(results)


def _import_source(
    conn: sqlite3.Connection, src: ArrowSource, columns: Mapping[str, frozenset[str]]
) -> FileImport:
    arrows = spines = UpsertCounts()
    for record in src.arrows:
        arrow_id, counts = _upsert_arrow(conn, record, columns["arrows"])
        arrows += counts
        for values in record.spines:
            spines += _upsert_spine(conn, arrow_id, values, columns["spine_specifications"])
    return FileImport(
        source=src.label,
        manufacturer=src.manufacturer,
        arrows=arrows,
        spines=spines,
        duplicates_merged=src.duplicates_merged,
    )


def _upsert_arrow(
    conn: sqlite3.Connection, record: ArrowRecord, cols: frozenset[str]
) -> tuple[int, UpsertCounts]:
    values = {k: v for k, v in record.values.items() if k in cols}
    if "manufacturer_id" in cols:
        values["manufacturer_id"] = _manufacturer_id(conn, record.manufacturer)
    key = {"manufacturer": record.manufacturer, "model_name": record.model_name}
    return _upsert(conn, "arrows", key, values)


def _upsert_spine(
    conn: sqlite3.Connection, arrow_id: int, spine: Mapping[str, object], cols: frozenset[str]
) -> UpsertCounts:
    values = {k: v for k, v in spine.items() if k in cols and k != "spine"}
    key = {"arrow_id": arrow_id, "spine": spine["spine"]}
    return _upsert(conn, "spine_specifications", key, values)[1]


def _manufacturer_id(conn: sqlite3.Connection, name: str) -> int | None:
    has_table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'manufacturers'"
    ).fetchone()
    if not has_table:
        return None
    row = conn.execute("SELECT id FROM manufacturers WHERE name = ?", (name,)).fetchone()
    if row is not None:
        return int(row[0])
    # Not INSERT OR IGNORE: an ignored insert still advances sqlite_sequence, and a second
    # import must leave the database identical.
    cur = conn.execute("INSERT INTO manufacturers (name) VALUES (?)", (name,))
    return int(cur.lastrowid or 0)


def _upsert(
    conn: sqlite3.Connection, table: str, key: Mapping[str, object], values: Mapping[str, object]
) -> tuple[int, UpsertCounts]:
    """Insert the row, or update the columns whose stored value differs; returns (id, counts)."""
    where = " AND ".join(f'"{k}" = ?' for k in key)
    names = list(values)
    select = ", ".join(["id", *(f'"{n}"' for n in names)])
    row = conn.execute(f'SELECT {select} FROM "{table}" WHERE {where}', tuple(key.values()))
    found = row.fetchone()
    if found is None:
        all_values = {**key, **values}
        cols = ", ".join(f'"{c}"' for c in all_values)
        marks = ", ".join("?" for _ in all_values)
        cur = conn.execute(
            f'INSERT INTO "{table}" ({cols}) VALUES ({marks})', tuple(all_values.values())
        )
        return int(cur.lastrowid or 0), UpsertCounts(inserted=1)
    row_id, stored = int(found[0]), found[1:]
    differing = {n: values[n] for n, old in zip(names, stored, strict=True) if old != values[n]}
    if not differing:
        return row_id, UpsertCounts(unchanged=1)
    sets = ", ".join(f'"{n}" = ?' for n in differing)
    conn.execute(f'UPDATE "{table}" SET {sets} WHERE id = ?', (*differing.values(), row_id))
    return row_id, UpsertCounts(updated=1)
