"""What `restore --latest --from-offsite` (CLI and control socket) answers: the archive (or
incremental backup) each database came from, and each one's restore (moved out of
jobs/offsite_pick.py, which chooses them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from backup_sidecar import archiver
from backup_sidecar.jobs.offsitecopy import Fetched, Skipped
from backup_sidecar.jobs.restore import restore_json


class _Group(Protocol):
    @property
    def fetched(self) -> Fetched: ...


class Picked(Protocol):
    """What jobs/offsite_pick.py chose (its ``Picked``; a protocol: no import circle)."""

    @property
    def groups(self) -> Sequence[_Group]: ...
    @property
    def not_found(self) -> Sequence[str]: ...
    @property
    def skipped(self) -> Sequence[Skipped]: ...
    def databases(self) -> dict[str, str]: ...


def latest_json(picked: Picked, results: Sequence[archiver.RestoreResult]) -> dict[str, Any]:
    """`restore --latest --from-offsite --json` and the socket's result: the archive each
    database came from, each archive's restore, and, when one archive gave every database,
    its restore at the top level as for a named archive."""
    groups = [
        restore_json(r) | {"offsite": offsite_json(g.fetched)}
        for g, r in zip(picked.groups, results, strict=True)
    ]
    one = groups[0] if len(groups) == 1 else None
    return {
        "archive": one["archive"] if one else None,
        "dry_run": any(r.dry_run for r in results),
        "restored": [db for r in results for db in r.restored],
        "pre_restore_archive": one["pre_restore_archive"] if one else None,
        "pre_restore_archives": [r.pre_restore_archive for r in results if r.pre_restore_archive],
        "damaged": [d for r in results for d in r.damaged],
        "plan": [f"{r.archive}: {step}" for r in results for step in r.plan],
        "databases": picked.databases(),
        "not_found": list(picked.not_found),
        "skipped": [{"object": s.object, "reason": s.reason} for s in picked.skipped],
        "offsite": one["offsite"] if one else None,
        "archives": groups,
    }


def offsite_json(fetched: Fetched) -> dict[str, Any]:
    """Where a fetched archive came from: its object, and whether the local copy was used."""
    return {
        "object": fetched.object,
        "reused": fetched.reused,
        "skipped": [{"object": s.object, "reason": s.reason} for s in fetched.skipped],
    }
