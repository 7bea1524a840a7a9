"""The check a backup runs inside its own read transaction, and the facts it records.

A page-level backup makes no copy to check afterwards, so it checks the live database in the
same read transaction its pages come from (``reader.read_pages``): ``quick`` runs
``PRAGMA quick_check``, ``full`` ``PRAGMA integrity_check``, both on exactly the snapshot
the pages are read from. The facts a full archive's metadata records (schema hash, user
version, row counts) are read there too. In WAL mode no writer waits for either; in rollback
mode the read transaction's SHARED lock makes writers wait for the check as well.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import sqlean

from backup_sidecar.archiver.sqlitefacts import (
    INTEGRITY_MAX_ERRORS,
    DatabaseFacts,
    one_line,
    read_facts,
)
from backup_sidecar.errors import PageReadError
from backup_sidecar.pagestore.manifest import Manifest

#: check -> the pragma it runs.
PRAGMAS = {"full": "integrity_check", "quick": "quick_check"}
#: check -> the checks that cover it (a passed integrity_check implies a passed quick_check).
COVERED_BY = {"full": ("full",), "quick": ("full", "quick")}
#: The metadata keys ``check_in_transaction`` writes (the facts of the checked image).
FACT_KEYS = (
    "check",
    "integrity_check",
    "sqlite_version",
    *(f.name for f in fields(DatabaseFacts) if f.name not in ("page_size", "page_count")),
)


def check_in_transaction(conn: sqlean.Connection, db: Path, check: str) -> dict[str, Any]:
    """Run ``check`` and read the facts in ``conn``'s open read transaction; PageReadError
    naming the file and the result if the check does not say ``ok``."""
    pragma = PRAGMAS[check]
    try:
        rows = conn.execute(f"PRAGMA {pragma}({INTEGRITY_MAX_ERRORS})").fetchall()
        result = one_line("; ".join(str(row[0]) for row in rows))
        facts = read_facts(conn) if result == "ok" else None
    except sqlean.DatabaseError as exc:
        raise PageReadError(db, f"{pragma} could not run: {exc}") from exc
    if facts is None:
        raise PageReadError(db, f"fails {pragma}: {result or 'no result'}")
    doc = asdict(facts)
    for key in ("page_size", "page_count"):  # the manifest has the snapshot's own
        doc.pop(key)
    return {
        "check": check,
        "integrity_check": result,
        "sqlite_version": sqlean.sqlite_version,
        **doc,
    }


def reused_check(parent: Manifest | None, image_sha256: str, check: str) -> dict[str, Any] | None:
    """The parent backup's check and facts, if they hold for this snapshot without running it.

    Why this is safe: the parent's check and facts were computed in the parent's own read
    transaction, on the snapshot whose pages hash to the parent's ``image_sha256``. A
    snapshot with the same SHA-256 is the same bytes (page size and count included), and
    ``integrity_check``, ``quick_check``, the schema and the row counts read only that image
    (the read transaction sees nothing else: no WAL frame past its snapshot). So the same
    SQLite version gives the same answers. Reused only if the parent's check passed
    (``ok``), covers ``check`` (``full`` covers ``quick``), ran under this SQLite version and
    left every fact; ``check_of`` then names the backup whose read transaction ran it.
    """
    if parent is None or parent.image_sha256 != image_sha256:
        return None
    meta = parent.metadata
    if (
        meta.get("integrity_check") != "ok"
        or meta.get("check") not in COVERED_BY[check]
        or meta.get("sqlite_version") != sqlean.sqlite_version
        or any(key not in meta for key in FACT_KEYS)
    ):
        return None
    return {
        **{key: meta[key] for key in FACT_KEYS},
        "check_of": meta.get("check_of") or parent.name,
    }
