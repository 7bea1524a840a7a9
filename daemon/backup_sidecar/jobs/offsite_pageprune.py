"""Offsite retention of incremental backups: their manifests by the archives' rules, then the
packs no kept manifest needs.

**Manifests.** An incremental backup offsite is a restore point of its policy like an archive:
``select_offsite_expired`` (jobs/offsite_prune.py) chooses, by the same rules, which manifest
objects go (per policy and exact database set, the ``offsite.keep`` newest restore points by
creation sequence stay, never fewer than one, never the newest upload; nothing whose record
has no origin, names a policy this sidecar does not configure or another database set; a
record-less object only once over a day old). The manifests of one backup (one per database)
share their origin: they stay or go together.

**Packs** (per database, ``pages/<db>/packs/``): a pack is deleted only when no manifest left
in that database's directory needs it: every remaining manifest's record names the packs it
needs (its origin's ``packs``), whoever's it is, confirmed or not; the packs of every local
backup of that database are kept too (an upload pending or cut short needs them). A manifest
object whose record cannot be read stops that database's sweep: what it needs is unknown. A
pack without a record (an upload cut short) goes only once over a day old, as the archives'.
Only the lease holder deletes (``Store.delete`` enforces it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import structlog

from backup_sidecar import offsite
from backup_sidecar.errors import OffsiteLeaseHeldError, OffsiteLeaseLostError, SidecarError
from backup_sidecar.jobs.offsite_pages import local_page_backups, needed_packs
from backup_sidecar.jobs.offsite_prune import UNFINISHED_AFTER, Expired, select_offsite_expired
from backup_sidecar.offsite.pagekeys import RecordCache, list_pages, parse_page_name

log = structlog.get_logger(__name__)

_NO_RECORD = "no checksum record"
#: The records this process read, kept while each stays the same (``list_pages``).
_RECORDS: RecordCache = {}


@dataclass(frozen=True)
class PagePrune:
    """What a page store retention pass deletes: manifest objects (with their policy), then
    pack objects, and the databases whose sweep was refused (why)."""

    manifests: list[Expired] = field(default_factory=list)
    packs: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


def select_page_expired(
    objects: Sequence[offsite.OffsiteObject],
    *,
    keep: Mapping[str, int],
    databases: Collection[str],
    store_now: datetime,
    policy_databases: Mapping[str, Collection[str]] | None = None,
    local_packs: Mapping[str, Collection[str]] | None = None,
) -> PagePrune:
    """Pure selection (module docstring); ``local_packs``: db -> packs local backups need."""
    # The archives' rules, applied to each manifest under a stand-in archive name.
    stand_in: dict[str, offsite.OffsiteObject] = {}
    for obj in objects:
        parsed = parse_page_name(obj.name)
        if parsed is not None and parsed.backup is not None:
            alias = f"{parsed.backup}.{parsed.db}.tar.gz"
            stand_in[alias] = obj
    chosen = select_offsite_expired(
        [dataclasses.replace(o, name=a) for a, o in stand_in.items()],
        keep=keep,
        databases=databases,
        store_now=store_now,
        policy_databases=policy_databases,
    )
    out = PagePrune()
    going: set[str] = set()
    for item in chosen:
        obj = stand_in[item.object]
        going.add(obj.name)
        out.manifests.append(Expired(obj.name, item.policy, item.archive))
    needed: dict[str, set[str]] = {db: set(p) for db, p in (local_packs or {}).items()}
    for obj in objects:
        parsed = parse_page_name(obj.name)
        if parsed is None or parsed.backup is None or obj.name in going:
            continue
        origin = obj.record.origin if obj.record is not None else None
        if origin is not None:
            needed.setdefault(parsed.db, set()).update(origin.packs)
        elif obj.record is not None or not obj.reason.startswith(_NO_RECORD):
            why = obj.reason if obj.record is None else "its record names no packs"
            out.refused[parsed.db] = f"{obj.name}: {why}"
    for obj in objects:
        parsed = parse_page_name(obj.name)
        if parsed is None or parsed.pack is None or parsed.db in out.refused:
            continue
        if parsed.db not in databases or parsed.pack in needed.get(parsed.db, ()):
            continue
        if obj.record is None and store_now - obj.modified <= UNFINISHED_AFTER:
            continue  # an upload that may still be running on a former lease holder
        out.packs.append(obj.name)
    return out


def local_needs(backup_dir: Path) -> dict[str, set[str]]:
    """db -> every pack a local incremental backup needs (its manifest's packs and bases;
    remembered per manifest file, so a pass costs a stat per backup)."""
    needs: dict[str, set[str]] = {}
    for backup in local_page_backups(backup_dir):
        for db, info in backup.infos.items():
            try:
                packs = needed_packs(info.path.parent.parent, backup.name)
            except FileNotFoundError:
                continue  # deleted meanwhile: it needs nothing
            needs.setdefault(db, set()).update(packs)
    return needs


def prune_pages(
    store: offsite.Store,
    *,
    lease: offsite.Lease,
    backup_dir: Path,
    keep: Mapping[str, int],
    databases: Collection[str],
    policy_databases: Mapping[str, Collection[str]] | None = None,
    encrypted_only: bool = False,
    dry_run: bool = False,
) -> PagePrune:
    """Apply the page stores' offsite retention once: manifests first, then packs (a kill
    between leaves packs a later pass collects, never a manifest without its packs). A delete
    that fails is logged and the others still run; a lease lost stops it. ``dry_run``: only
    what would go (nothing deleted, no lease needed)."""
    if not dry_run:
        lease.require_writable()
    objects = list_pages(store, encrypted_only=encrypted_only, cache=_RECORDS).objects
    chosen = select_page_expired(
        objects,
        keep=keep,
        databases=databases,
        store_now=lease.store_now(),
        policy_databases=policy_databases,
        local_packs=local_needs(backup_dir),
    )
    for db, why in chosen.refused.items():
        log.warning("offsite_pages_gc_refused", database=db, reason=why)
    if dry_run:
        return chosen
    done = PagePrune(refused=chosen.refused)
    for item in chosen.manifests:
        if _delete(store, lease, item.object):
            done.manifests.append(item)
            log.info("offsite_pruned", object=item.object, policy=item.policy, url=store.url)
    if len(done.manifests) < len(chosen.manifests):
        return done  # a manifest still there may need packs: sweep at the next pass
    for name in chosen.packs:
        if _delete(store, lease, name):
            done.packs.append(name)
    if done.packs:
        log.info("offsite_pages_collected", packs=len(done.packs), url=store.url)
    return done


def _delete(store: offsite.Store, lease: offsite.Lease, name: str) -> bool:
    try:
        store.delete(name, lease=lease)
    except (OffsiteLeaseHeldError, OffsiteLeaseLostError):
        raise
    except (SidecarError, OSError) as exc:
        log.error("offsite_prune_failed", object=name, error=str(exc))
        return False
    return True
