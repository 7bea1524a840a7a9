"""Incremental backups as candidates of `restore --latest --from-offsite` (and the start hook's
`init --restore-from-offsite`): each confirmed incremental backup in the store's page stores
is one candidate, named like an archive (``<policy>_<YYYYmmdd>_<HHMMSS>``), ordered with the
archives by the store's upload time (its newest manifest's), fetched by name
(jobs/offsite_pagefetch.py) and restored through the normal path."""

from __future__ import annotations

from collections.abc import Sequence

from backup_sidecar import archiver, offsite
from backup_sidecar.jobs.offsite import archive_name
from backup_sidecar.jobs.restore import restore_source
from backup_sidecar.jobs.runtime import Runtime
from backup_sidecar.offsite.pagekeys import list_pages, parse_page_name


def candidate_name(object_name: str) -> str | None:
    """The name a restore takes for an object: an archive's, or an incremental backup's for a
    page store manifest object; None for anything else (a pack)."""
    parsed = parse_page_name(object_name)
    if parsed is not None:
        return parsed.backup
    return archive_name(object_name)


def page_candidates(
    store: offsite.Store, *, encrypted_only: bool
) -> tuple[offsite.OffsiteObject, ...]:
    """One confirmed manifest object per incremental backup offsite (its newest upload)."""
    newest: dict[str, offsite.OffsiteObject] = {}
    for obj in list_pages(store, encrypted_only=encrypted_only).objects:
        parsed = parse_page_name(obj.name)
        if parsed is None or parsed.backup is None or not obj.confirmed:
            continue
        have = newest.get(parsed.backup)
        if have is None or obj.modified > have.modified:
            newest[parsed.backup] = obj
    return tuple(newest.values())


def fetched_holds(rt: Runtime, name: str) -> tuple[str | None, Sequence[str]]:
    """(policy, databases) of a fetched archive or incremental backup, from its own metadata."""
    path, _, members, backup = restore_source(rt, name)
    if backup is not None:
        return backup.policy or None, members
    return archiver.read_manifest(path).policy, members
