"""`init --restore-from-offsite`: bring back, from the offsite store, the databases a fresh host
lacks, before the startup checks run.

Only a database that is missing, zero-length, or a SQLite file without any table is restored;
one with content is left alone (and said so). Each database that needs content comes from
the newest confirmed copy that holds it, chosen as `restore --latest --from-offsite` chooses
(jobs/offsite_pick.py: `pre_restore` copies never, a damaged one passed over for the next
newest); an unreachable store, a refused request or a wrong identity stop the whole restore
(nothing is created empty in place of a database offsite holds). So does a store that holds
archive objects of a configured policy for a database that needs content when no usable
confirmed copy holds it (every copy damaged, every record unreadable): only an empty store, for
that database, lets init create it empty (a first deploy). Each copy goes through the normal
verify, pre-restore and restore path, for the databases that need it only.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from backup_sidecar.archiver.model import DatabaseSpec
from backup_sidecar.archiver.sqlitefacts import not_regular_reason
from backup_sidecar.errors import OffsiteCopiesUnusableError, OffsiteNothingToRestoreError
from backup_sidecar.jobs.offsite_pick import pick_copies, restore_groups
from backup_sidecar.jobs.runtime import Runtime

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SeedReport:
    """What the offsite restore did, per database."""

    #: database -> the archive it was restored from
    restored: dict[str, str] = field(default_factory=dict)
    #: database -> why it was left alone ("has content", "not a regular file", ...)
    left_alone: dict[str, str] = field(default_factory=dict)
    #: databases that needed content but no confirmed copy held them
    not_found: tuple[str, ...] = ()


def needs_content(db: DatabaseSpec) -> str | None:
    """Why ``db`` should be restored ("missing", "zero-length", "no tables"), or None when it
    has content or is in a state only a human should touch."""
    path = db.path
    if not path.exists() and not path.is_symlink():
        if any(Path(f"{path}{s}").exists() for s in ("-wal", "-journal")):
            return None  # SQLite would replay that journal into the restored file
        return "missing"
    if not_regular_reason(path):
        return None
    if path.stat().st_size == 0:
        return "zero-length"
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            (tables,) = conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None  # unreadable: content of some kind; init's integrity check says what
    return "no tables" if tables == 0 else None


def _why_left(db: DatabaseSpec) -> str:
    if not db.path.exists() and not db.path.is_symlink():
        return "missing, but a -wal or -journal file is beside it: left to init, not restored"
    return not_regular_reason(db.path) or "has content: left alone"


def restore_missing(rt: Runtime, *, environ: Mapping[str, str]) -> SeedReport:
    """Restore every database of ``rt`` that lacks content from the offsite store (see the
    module doc); offsite and restore failures propagate (the start hook then exits 1)."""
    rt.require_offsite()
    needed: dict[str, str] = {}
    left: dict[str, str] = {}
    for name, db in rt.databases.items():
        why = needs_content(db)
        if why is None:
            left[name] = _why_left(db)
            log.info("offsite_restore_skipped", database=name, reason=left[name])
        else:
            needed[name] = why
    restored: dict[str, str] = {}
    if not needed:
        return SeedReport(restored, left)
    for directory in {rt.backup_dir, *(rt.databases[n].path.parent for n in needed)}:
        directory.mkdir(parents=True, exist_ok=True)
    picked = pick_copies(rt, list(needed), environ=environ)
    lost = [n for n in picked.not_found if n in picked.stored]
    if lost:  # before anything is restored or created
        raise OffsiteCopiesUnusableError(picked.url, lost, len(picked.skipped))
    if not picked.confirmed:
        nothing = OffsiteNothingToRestoreError(picked.url)
        log.warning("offsite_restore_nothing", reason=str(nothing), databases=sorted(needed))
    for result in restore_groups(rt, picked):
        for name in result.restored:
            log.info("offsite_restored", database=name, archive=result.archive,
                     was=needed.pop(name, ""))  # fmt: skip
            restored[name] = result.archive
    for name in sorted(needed):
        log.warning("offsite_restore_not_found", database=name, reason=needed[name])
    return SeedReport(restored, left, tuple(sorted(needed)))
