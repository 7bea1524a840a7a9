"""Offsite retention: which copies in the store a policy no longer needs, and deleting them.

Copies are grouped by what their checksum record says the archive carries (``Origin``: policy
and database set) and ordered by its creation sequence, then its creation time (the
archiver's order; never the wall clock alone). Per group the ``offsite.keep[policy]`` newest
restore points stay (a plain and an ``.age`` object of one archive are one point), and never
fewer than one: the newest confirmed copy of a policy, by that order and by the store's
upload time, is never deleted. Nothing is deleted that this sidecar cannot prove is its own
policy's archive: a copy whose record carries no origin, names a policy it does not
configure, or a database set other than exactly the one it backs up stays (another sidecar
sharing the prefix with a different set, or this one before its databases changed). An
object without a checksum record (an upload that never finished) is deleted only once it is
over a day old on the store's clock: an upload may still be running on a former lease holder.
Objects that are not confirmed for any other reason (a damaged copy, a record that exists but
cannot be read) are kept for an operator to look at, like damaged local archives. Only the
holder of the prefix's lease deletes (``Store.delete`` enforces it).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from backup_sidecar import archiver, offsite
from backup_sidecar.errors import OffsiteLeaseHeldError, OffsiteLeaseLostError, SidecarError
from backup_sidecar.jobs.offsite import archive_name
from backup_sidecar.jobs.offsite_ours import own_origin

log = structlog.get_logger(__name__)

#: How old an object without a checksum record must be before it is taken for abandoned.
UNFINISHED_AFTER = timedelta(days=1)
#: The `policy` label (and the reason) of an abandoned unfinished upload.
UNCONFIRMED = "unconfirmed"
_NO_RECORD = "no checksum record"


def origin_of(archive: archiver.ArchiveInfo) -> offsite.Origin:
    """What a local archive's record carries offsite (its metadata's policy, sequence, time
    and databases)."""
    return offsite.Origin(
        policy=archive.policy,
        sequence=archive.sequence,
        created_at=archive.created_at,
        databases=tuple(sorted(archive.databases)),
    )


def upload_candidates(
    local: Sequence[archiver.ArchiveInfo], keep: Mapping[str, int]
) -> list[archiver.ArchiveInfo]:
    """The local archives worth uploading: per policy and database set, the ``keep`` newest
    (at least one); every archive of a policy without an offsite keep. An older one would be
    pruned at once and, being missing, uploaded again at the next pass. A copy (its metadata
    names another backup: a link, copy or rename) whose original is here is not one: its
    restore point goes offsite under the original's name; one without its original stays, for
    the upload to refuse saying so."""
    here = {a.name for a in local}
    groups: dict[tuple[str, tuple[str, ...]], list[archiver.ArchiveInfo]] = {}
    for archive in local:
        if archive.copy_of is not None and archive.copy_of in here:
            continue
        groups.setdefault((archive.policy, tuple(sorted(archive.databases))), []).append(archive)
    wanted: set[int] = set()
    for (policy, _), group in groups.items():
        ordered = sorted(group, key=lambda a: a.newness, reverse=True)
        count = max(keep[policy], 1) if policy in keep else len(ordered)
        wanted.update(id(a) for a in ordered[:count])
    return [a for a in local if id(a) in wanted]


@dataclass(frozen=True)
class Expired:
    """An object offsite retention deletes, and why (its policy, or `unconfirmed`)."""

    object: str
    policy: str
    archive: str | None


def select_offsite_expired(
    objects: Sequence[offsite.OffsiteObject],
    *,
    keep: Mapping[str, int],
    databases: Collection[str],
    store_now: datetime,
    policy_databases: Mapping[str, Collection[str]] | None = None,
) -> list[Expired]:
    """Pure selection (see the module docstring): what goes, oldest first per group. A
    policy's set is its ``policy_databases`` entry, else ``databases`` (every one configured)."""
    own = policy_databases or {}
    groups: dict[tuple[str, tuple[str, ...]], list[offsite.OffsiteObject]] = {}
    expired: list[Expired] = []
    for obj in objects:
        name = archive_name(obj.name)
        if name is None:
            continue
        if not obj.confirmed:
            if obj.reason.startswith(_NO_RECORD) and store_now - obj.modified > UNFINISHED_AFTER:
                expired.append(Expired(obj.name, UNCONFIRMED, name))
            continue
        origin = obj.record.origin if obj.record is not None else None
        ours = own_origin(obj, policies=keep, databases=databases, policy_databases=own)
        if origin is None or not ours:
            continue  # another sidecar's set (or this one's before a change) is never ours
        groups.setdefault((origin.policy, origin.databases), []).append(obj)
    for (policy, _), group in sorted(groups.items()):
        points: dict[tuple[bool, int, datetime], list[offsite.OffsiteObject]] = {}
        for obj in group:
            points.setdefault(_newness(obj), []).append(obj)
        ordered = sorted(points, reverse=True)
        # S3 dates uploads to the second: copies uploaded in one are ordered by their origin.
        last_uploaded = max(group, key=lambda o: (o.modified, _newness(o), o.name))
        for point in ordered[max(keep[policy], 1) :]:
            same = points[point]
            if any(o is last_uploaded for o in same):
                continue
            expired.extend(Expired(o.name, policy, archive_name(o.name)) for o in same)
    return expired


def _newness(obj: offsite.OffsiteObject) -> tuple[bool, int, datetime]:
    assert obj.record is not None and obj.record.origin is not None
    return obj.record.origin.newness


@dataclass(frozen=True)
class OffsitePruneResult:
    deleted: list[Expired] = field(default_factory=list)
    failed: list[tuple[Expired, str]] = field(default_factory=list)


def prune_offsite(
    store: offsite.Store,
    *,
    lease: offsite.Lease,
    keep: Mapping[str, int],
    databases: Collection[str],
    policy_databases: Mapping[str, Collection[str]] | None = None,
    dry_run: bool = False,
    encrypted_only: bool = False,
) -> OffsitePruneResult:
    """Apply offsite retention to ``store``'s prefix; ``dry_run`` only says what would go.
    With ``encrypted_only`` (the config encrypts) a plaintext copy is never confirmed, so it
    neither counts nor goes: anyone can write one, no sidecar of this config did.

    A delete that fails is reported and the others still run; a lease lost or held by another
    sidecar stops the prune (OffsiteLeaseHeldError / OffsiteLeaseLostError)."""
    if not dry_run:
        lease.require_writable()
    objects = store.list(encrypted_only=encrypted_only).objects
    expired = select_offsite_expired(
        objects,
        keep=keep,
        databases=databases,
        store_now=lease.store_now(),
        policy_databases=policy_databases,
    )
    result = OffsitePruneResult()
    for item in expired:
        if dry_run:
            result.deleted.append(item)
            continue
        try:
            store.delete(item.object, lease=lease)
        except (OffsiteLeaseHeldError, OffsiteLeaseLostError):
            raise
        except (SidecarError, OSError) as exc:
            result.failed.append((item, str(exc)))
            log.error("offsite_prune_failed", object=item.object, error=str(exc))
            continue
        result.deleted.append(item)
        log.info("offsite_pruned", object=item.object, policy=item.policy, url=store.url)
    return result
