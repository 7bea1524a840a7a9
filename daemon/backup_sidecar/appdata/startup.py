"""The container start hook (`backup-sidecar init`): the seed's startup rules, made safe.

Per database: a missing file is created with the app schema (atomically, never replacing
anything); an existing one is integrity-checked read-only. A database whose SQLite schema is
completely empty (a zero-length file, or a header-only one) gets the schema written in place
under a write lock; a database with any table, index, view or trigger is never written.
Arrow JSON is imported only outside production, or in production with
``FORCE_DATABASE_IMPORT=true``; otherwise the report carries one message saying so. The flag
accepts ``true``/``false`` and also ``1``/``yes``/``on`` and ``0``/``no``/``off`` (any case,
blank meaning unset); any other value (``ture``) is refused with a :class:`ConfigError` whenever
an import is asked for, before anything is done, rather than silently meaning false (those
rules: `appdata/import_rules.py`). The JSON files are read and validated before any directory
or database is created.
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from backup_sidecar.appdata.arrows_import import ImportReport, import_sources, load_sources
from backup_sidecar.appdata.arrows_parse import ArrowSource
from backup_sidecar.appdata.import_rules import Note, import_forced, import_note, production_marker
from backup_sidecar.appdata.schema import (
    BUSY_TIMEOUT_S,
    DatabaseKind,
    create_empty_database,
    initialise_in_place,
)
from backup_sidecar.archiver.model import DatabaseSpec
from backup_sidecar.archiver.sqlitefacts import not_regular_reason
from backup_sidecar.errors import BackupDirError, DatabaseError, DatabaseExistsError, UsageError

#: The database that arrow JSON is imported into.
ARROW_DATABASE = "arrow"
#: Sibling files that mean SQLite state lives outside the main file.
_JOURNAL_SUFFIXES = ("-wal", "-journal")


class DatabaseStatus(enum.StrEnum):
    """What ``init`` found or did for one database."""

    CREATED = "created"  # did not exist: created with the app schema
    INITIALISED = "initialised"  # existed with no schema at all: schema written in place
    EXISTS_OK = "exists_ok"  # existed, passed integrity_check, left untouched
    MISSING = "missing"  # did not exist, and no schema is known for it: left to the app
    INTEGRITY_FAILED = "integrity_failed"  # existed and failed integrity_check: untouched
    REFUSED = "refused"  # a state init will not touch (e.g. an orphaned -wal): untouched

    @property
    def failed(self) -> bool:
        return self in (DatabaseStatus.INTEGRITY_FAILED, DatabaseStatus.REFUSED)


@dataclass(frozen=True)
class DatabaseOutcome:
    """One database's line in the init report."""

    name: str
    path: Path
    status: DatabaseStatus
    #: integrity_check result ("ok" or the faults), or why it was refused.
    detail: str = ""
    imported: ImportReport | None = None


@dataclass(frozen=True)
class InitReport:
    """Everything ``init`` did: the CLI logs one line per database and exits 1 if ``not ok``."""

    production: bool
    #: The variable that made this production, e.g. "FLASK_ENV=production"; "" when not.
    environment: str
    import_forced: bool
    created_dirs: tuple[Path, ...]
    databases: tuple[DatabaseOutcome, ...]
    #: Notes about the import, e.g. the single production import-skip message.
    notes: tuple[Note, ...] = ()

    @property
    def messages(self) -> tuple[str, ...]:
        return tuple(note.message for note in self.notes)

    @property
    def failed(self) -> tuple[DatabaseOutcome, ...]:
        return tuple(d for d in self.databases if d.status.failed)

    @property
    def ok(self) -> bool:
        return not self.failed


def run_init(
    databases: Sequence[DatabaseSpec],
    *,
    backup_dir: Path,
    environ: Mapping[str, str],
    import_files: Sequence[Path] = (),
) -> InitReport:
    """Apply the startup rules to ``databases`` (see the module doc) and report what happened."""
    marker = production_marker(environ)
    # Only an import consults the flag: a typo in it does not stop a start without one.
    forced = import_forced(environ) if import_files else False
    if import_files and not any(db.name == ARROW_DATABASE for db in databases):
        raise UsageError(f"arrow JSON import needs a database named {ARROW_DATABASE!r}")
    note = import_note(environ, len(import_files)) if import_files else None
    notes = [note] if note is not None else []
    do_import = bool(import_files) and (note is None or note.event == "import_forced")
    # Every file is read and validated before a directory or database is created.
    sources = load_sources(import_files) if do_import else []
    created_dirs = _make_dirs(databases, backup_dir)
    outcomes = []
    for db in databases:
        outcome = prepare_database(db)
        if do_import and db.name == ARROW_DATABASE:
            outcome = _import_into(outcome, sources, notes)
        outcomes.append(outcome)
    return InitReport(
        production=bool(marker),
        environment=marker,
        import_forced=forced,
        created_dirs=created_dirs,
        databases=tuple(outcomes),
        notes=tuple(notes),
    )


def prepare_database(db: DatabaseSpec) -> DatabaseOutcome:
    """Create, initialise or integrity-check one database; never writes one that has a schema."""
    path = db.path
    journals = [f"{path}{s}" for s in _JOURNAL_SUFFIXES if _nonempty(Path(f"{path}{s}"))]
    if problem := not_regular_reason(path):  # opening a FIFO waited for a writer, forever
        return DatabaseOutcome(db.name, path, DatabaseStatus.REFUSED, f"{problem}; not opened")
    exists = path.exists()
    if journals and (not exists or path.stat().st_size == 0):
        # Opening such a database makes SQLite delete (or replay) the journal: leave it to a human.
        what = "is missing" if not exists else "is zero-length"
        reason = f"{what} but {', '.join(journals)} is not empty; not opened, nothing changed"
        return DatabaseOutcome(db.name, path, DatabaseStatus.REFUSED, reason)
    return _prepare_existing(db) if exists else _prepare_missing(db)


def _prepare_missing(db: DatabaseSpec) -> DatabaseOutcome:
    kind = _kind(db.name)
    if kind is None:
        return DatabaseOutcome(db.name, db.path, DatabaseStatus.MISSING, "no schema known")
    try:
        create_empty_database(db.path, kind)
    except DatabaseExistsError:
        return _prepare_existing(db)  # appeared meanwhile: check it like any existing one
    return DatabaseOutcome(db.name, db.path, DatabaseStatus.CREATED, f"{kind} schema, WAL")


def _prepare_existing(db: DatabaseSpec) -> DatabaseOutcome:
    result, objects = check_integrity(db.path)
    if result != "ok":
        return DatabaseOutcome(db.name, db.path, DatabaseStatus.INTEGRITY_FAILED, result)
    kind = _kind(db.name)
    if objects == 0 and kind is not None:
        try:
            written = initialise_in_place(db.path, kind)
        except sqlite3.Error as exc:
            raise DatabaseError(db.name, db.path, f"cannot write the schema: {exc}") from exc
        if written:
            return DatabaseOutcome(db.name, db.path, DatabaseStatus.INITIALISED, f"{kind} schema")
    return DatabaseOutcome(db.name, db.path, DatabaseStatus.EXISTS_OK, result)


def check_integrity(path: Path) -> tuple[str, int]:
    """``PRAGMA integrity_check`` over a read-only connection: (result, schema object count).

    The result is ``"ok"`` or the faults joined by ``"; "``; a file SQLite cannot read at all
    ("file is not a database") is a failed check, not an exception.
    """
    uri = f"{path.resolve().as_uri()}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)
        try:
            rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check(20)")]
            (objects,) = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"cannot be read: {exc}", 0
    # A result row can hold several lines ("*** in database main ***\nOn tree page ..."): the
    # CLI logs one line per database.
    return "; ".join(line for row in rows for line in row.splitlines() if line), int(objects)


def _import_into(
    outcome: DatabaseOutcome, sources: Sequence[ArrowSource], notes: list[Note]
) -> DatabaseOutcome:
    if outcome.status.failed or outcome.status is DatabaseStatus.MISSING:
        message = f"not importing into {outcome.name!r}: it is {outcome.status.value}"
        notes.append(Note("import_skipped", message))
        return outcome
    report = import_sources(outcome.path, sources)
    return DatabaseOutcome(outcome.name, outcome.path, outcome.status, outcome.detail, report)


def _make_dirs(databases: Sequence[DatabaseSpec], backup_dir: Path) -> tuple[Path, ...]:
    """Create each database's directory and the backup directory; returns those it created."""
    created: list[Path] = []
    wanted: dict[Path, DatabaseSpec | None] = {db.path.parent: db for db in databases}
    wanted[backup_dir] = None
    for directory, db in wanted.items():
        if directory.is_dir():
            continue
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = f"cannot create directory {directory}: {exc.strerror or exc}"
            if db is None:
                raise BackupDirError(directory, reason) from exc
            raise DatabaseError(db.name, db.path, reason) from exc
        created.append(directory)
    return tuple(created)


def _kind(name: str) -> DatabaseKind | None:
    """The app schema for a database name; other applications' databases have none here."""
    if name == "arrow":
        return "arrow"
    if name == "user":
        return "user"
    return None


def _nonempty(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False
