"""Which offsite copy is newer: the one order of `restore --latest --from-offsite`,
`init --restore-from-offsite`, `verify --offsite` (with or without ``--latest``), the scheduled
offsite verify and offsite retention, and keeping that order true across host rebuilds.

A copy is ordered by the origin its checksum record carries (the archive's creation sequence,
then its creation time: the archiver's ``newness``, never the wall clock alone); the store's
upload time only orders copies without an origin and breaks ties. An upload time says when a
copy was sent, not when it was made: an older archive uploaded late (``offsite.keep`` raised,
an archive renamed and renamed back, an S3 metadata-only self-copy) is not the newest.

Sequences are handed out per backup directory, so a host rebuilt from offsite would start
again at 1 below every copy of its former self. Whenever the sidecar lists the prefix (each
upload pass, before anything is uploaded; `restore --from-offsite`, `init
--restore-from-offsite`) it raises the directory's counter (archiver/sequence.py) to the
highest origin sequence of the confirmed copies of its configured policies, so its next backup
is newer than every one of them. Backups made before that first listing keep their lower
sequences (README, "Offsite copies").
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from pathlib import Path

import structlog

from backup_sidecar import archiver, offsite
from backup_sidecar.archiver.manifest import MAX_SEQUENCE
from backup_sidecar.errors import SidecarError
from backup_sidecar.jobs.offsitecopy import archive_name
from backup_sidecar.offsite.pagekeys import parse_page_name

log = structlog.get_logger(__name__)

#: No sidecar hands out half the largest sequence (a backup a second for 142 million years):
#: a record claiming more was planted, and raises nothing (it would stop every backup).
_PLAUSIBLE = MAX_SEQUENCE // 2


def upload_order(obj: offsite.OffsiteObject) -> tuple[datetime, str, int]:
    """Sort key, newest last: the store's upload time (to the second on S3), then, within a
    second, the archive name with its unique suffix counted (``NAME-2`` after ``NAME``: as
    object names, ``NAME.tar.gz`` sorted after ``NAME-2.tar.gz`` and won the tie)."""
    page = parse_page_name(obj.name)  # an incremental backup's manifest: its backup's name
    local = archive_name(obj.name) or (page.backup if page else None) or obj.name
    base, dash, n = local.rpartition("-")
    if dash and n.isdigit():
        return (obj.modified, base, int(n))
    return (obj.modified, local, 1)


def copy_order(obj: offsite.OffsiteObject) -> tuple[bool, int, datetime, datetime, str, int]:
    """Sort key, newest last: the record's origin (sequence, then creation time), then the
    upload order; a copy without an origin ranks by its upload time among those without a
    sequence (below every copy that has one)."""
    origin = obj.record.origin if obj.record is not None else None
    newness = origin.newness if origin is not None else (False, 0, obj.modified)
    return (*newness, *upload_order(obj))


def highest_origin(objects: Iterable[offsite.OffsiteObject], policies: Collection[str]) -> int:
    """The highest origin sequence among the confirmed copies of ``policies`` (0 if none)."""
    return max(
        (
            o.record.origin.sequence
            for o in objects
            if o.confirmed
            and o.record is not None
            and o.record.origin is not None
            and o.record.origin.policy in policies
            and o.record.origin.policy != archiver.PRE_RESTORE_POLICY
            and o.record.origin.sequence is not None
            and o.record.origin.sequence < _PLAUSIBLE
        ),
        default=0,
    )


def raise_sequence(
    backup_dir: Path, objects: Iterable[offsite.OffsiteObject], policies: Collection[str]
) -> None:
    """Raise ``backup_dir``'s creation-sequence counter to ``highest_origin`` (logged as
    ``archive_sequence_raised``); a counter that cannot be read or written is logged, never
    an error: the listing's caller goes on."""
    seen = highest_origin(objects, policies)
    if seen <= 0 or not backup_dir.is_dir():
        return
    try:
        if archiver.reconcile_sequence(backup_dir, seen=seen):
            log.warning("archive_sequence_raised", sequence=seen, source="offsite")
    except (SidecarError, OSError) as exc:
        log.warning("archive_sequence_unchecked", error=str(exc), source="offsite")
