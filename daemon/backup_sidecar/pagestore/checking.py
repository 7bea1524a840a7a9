"""The check a backup runs inside its own read transaction, and the facts it records.

A page-level backup makes no copy to check afterwards, so it checks the live database in the
same read transaction its pages come from (``reader.read_pages``): ``quick`` runs
``PRAGMA quick_check``, ``full`` ``PRAGMA integrity_check``, both on exactly the snapshot
the pages are read from. The facts a full archive's metadata records (schema hash, user
version, row counts) are read there too. In WAL mode no writer waits for either; in rollback
mode the read transaction's SHARED lock makes writers wait for the check as well.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import sqlean

from backup_sidecar.archiver.sqlitefacts import INTEGRITY_MAX_ERRORS, one_line, read_facts
from backup_sidecar.errors import PageReadError

#: check -> the pragma it runs.
PRAGMAS = {"full": "integrity_check", "quick": "quick_check"}


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
