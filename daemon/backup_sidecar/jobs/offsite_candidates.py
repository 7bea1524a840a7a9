"""Incremental backups as candidates of `restore --latest --from-offsite` (and the start hook's
`init --restore-from-offsite`): each confirmed incremental backup in the store's page stores
is one candidate, named like an archive (``<policy>_<YYYYmmdd>_<HHMMSS>``), ordered with the
archives by its record's origin (jobs/offsite_order.py), fetched by name
(jobs/offsite_pagefetch.py) and restored through the normal path."""

from __future__ import annotations

from collections.abc import Sequence

from backup_sidecar import archiver, offsite
from backup_sidecar.jobs.offsite import archive_name
from backup_sidecar.jobs.offsite_order import copy_order
from backup_sidecar.jobs.restore import restore_source
from backup_sidecar.jobs.runtime import Runtime
from backup_sidecar.offsite.pagekeys import list_pages, parse_page_name

_NO_RECORD = "no checksum record"


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
    """One confirmed manifest object per incremental backup offsite (its newest), for
    the backups whose upload is complete only (``pending_pages``)."""
    objects = list_pages(store, encrypted_only=encrypted_only).objects
    pending = pending_pages(objects)
    newest: dict[str, offsite.OffsiteObject] = {}
    for obj in objects:
        parsed = parse_page_name(obj.name)
        if parsed is None or parsed.backup is None or not obj.confirmed:
            continue
        if parsed.backup in pending:
            continue
        have = newest.get(parsed.backup)
        if have is None or copy_order(obj) > copy_order(have):
            newest[parsed.backup] = obj
    return tuple(newest.values())


def pending_pages(objects: Sequence[offsite.OffsiteObject]) -> set[str]:
    """The incremental backups whose upload is still under way (or was cut short): a database
    its manifests' origin names has no manifest object with a checksum record yet, or a pack
    one of them needs is there without its record. Not a copy (pending, never `corrupt`); a
    manifest or pack whose record exists but no longer matches is damage, not pending."""
    recorded: set[tuple[str, str]] = set()  # (db, backup or pack) with a checksum record
    uploading: set[tuple[str, str]] = set()  # there, its record not written yet
    needs: dict[str, set[tuple[str, str]]] = {}  # backup -> (db, manifest or pack) it needs
    for obj in objects:
        parsed = parse_page_name(obj.name)
        if parsed is None:
            continue
        key = (parsed.db, parsed.backup or parsed.pack or "")
        if obj.reason.startswith(_NO_RECORD):
            uploading.add(key)
        else:
            recorded.add(key)
        origin = obj.record.origin if obj.record is not None else None
        if parsed.backup is not None and origin is not None:
            wanted = needs.setdefault(parsed.backup, set())
            wanted.update((db, parsed.backup) for db in origin.databases)
            wanted.update((parsed.db, pack) for pack in origin.packs)
    return {
        backup
        for backup, wanted in needs.items()
        if any(k not in recorded and (k[1] == backup or k in uploading) for k in wanted)
    }


def fetched_holds(rt: Runtime, name: str) -> tuple[str | None, Sequence[str]]:
    """(policy, databases) of a fetched archive or incremental backup, from its own metadata."""
    path, _, members, backup = restore_source(rt, name)
    if backup is not None:
        return backup.policy or None, members
    return archiver.read_manifest(path).policy, members
