"""`init --restore-from-offsite`: bring back, from the offsite store, the databases a fresh host
lacks, before the startup checks run.

Only a database that is missing, zero-length, or a SQLite file without any table is restored;
one with content is left alone (and said so). The newest confirmed copy (by the store's upload
time) is fetched first; if some databases still lack content (it holds another policy's set),
the newest confirmed copy of each remaining set follows, judged by the policy in its name (a
policy of the configuration backs up its `databases`; any other name may hold any).
`pre_restore` archives, which hold what a restore replaced, are never used. A damaged copy
(its object or its archive fails a check) is passed over for the next newest; an unreachable
store, a refused request or a wrong identity stop the whole restore (nothing is created empty
in place of a database offsite holds). Each archive goes through the normal verify,
pre-restore and restore path, for the databases that need it only.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from backup_sidecar import archiver
from backup_sidecar.archiver.model import DatabaseSpec
from backup_sidecar.archiver.sqlitefacts import not_regular_reason
from backup_sidecar.errors import OffsiteNothingToRestoreError
from backup_sidecar.jobs.offsite import (
    UNUSABLE_COPY,
    archive_name,
    fetch_archive,
    open_store,
    upload_order,
)
from backup_sidecar.jobs.restore import run_restore
from backup_sidecar.jobs.runtime import Runtime

log = structlog.get_logger(__name__)

#: ``<policy>_<YYYYmmdd>_<HHMMSS>`` (a unique name may carry a suffix after the time).
_DEFAULT_NAME = re.compile(r"(?P<policy>.+?)_\d{8}_\d{6}(?:[._-].*)?")


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


def policy_of(name: str) -> str | None:
    """The policy in a default archive name, None for any other name."""
    match = _DEFAULT_NAME.fullmatch(name)
    return match.group("policy") if match else None


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
    candidates = _candidates(rt, environ)
    if not candidates:
        nothing = OffsiteNothingToRestoreError(rt.require_offsite().url)
        log.warning("offsite_restore_nothing", reason=str(nothing), databases=sorted(needed))
    for candidate in candidates:
        if not needed:
            break
        if not _may_hold(rt, candidate, needed):
            continue
        try:
            # (a local archive of that name is used when it is the same archive)
            archive = fetch_archive(rt, candidate, environ=environ).archive
            _restore_from(rt, archive, needed, restored)
        except UNUSABLE_COPY as exc:  # nothing written: the next newest copy
            log.warning("offsite_restore_candidate_failed", archive=candidate, error=str(exc))
    for name in sorted(needed):
        log.warning("offsite_restore_not_found", database=name, reason=needed[name])
    return SeedReport(restored, left, tuple(sorted(needed)))


def _restore_from(rt: Runtime, archive: str, needed: dict[str, str], done: dict[str, str]) -> None:
    path = archiver.resolve_archive(rt.backup_dir, archive)
    members = set(archiver.read_manifest(path).members())
    names = sorted(n for n in needed if n in members)
    if not names:
        return
    result = run_restore(rt, archive, names=names)
    for name in result.restored:
        log.info("offsite_restored", database=name, archive=archive, was=needed.pop(name, ""))
        done[name] = archive


def _candidates(rt: Runtime, environ: Mapping[str, str]) -> list[str]:
    """Confirmed offsite archives, newest first by the store's upload time."""
    spec = rt.require_offsite()
    store = open_store(spec, environ=environ)
    # (the config encrypts: a plaintext object is never confirmed, as for restore)
    listed = store.list(encrypted_only=bool(spec.recipients)).objects
    confirmed = [o for o in listed if o.confirmed]
    confirmed.sort(key=upload_order, reverse=True)
    names = [archive_name(o.name) for o in confirmed]
    return [n for n in names if n is not None]


def _may_hold(rt: Runtime, name: str, needed: Mapping[str, str]) -> bool:
    policy = policy_of(name)
    if policy == archiver.PRE_RESTORE_POLICY:
        return False
    if policy is None or policy not in rt.keep:
        return True  # manual or unknown: may hold any database
    wanted = rt.policy_databases.get(policy) or tuple(rt.databases)
    return any(n in needed for n in wanted)
