"""`list --offsite` of incremental backups: one copy per backup found in the page stores,
confirmed only when every database's manifest and every pack it needs are confirmed (else the
first reason why not), with the bytes they take (manifests plus the packs they need)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backup_sidecar import offsite
from backup_sidecar.offsite.pagekeys import pack_object, parse_page_name


@dataclass(frozen=True)
class PageCopy:
    """One incremental backup offsite."""

    name: str
    databases: tuple[str, ...]
    size: int
    modified: datetime
    encrypted: bool
    confirmed: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "incremental",
            "databases": list(self.databases),
            "size": self.size,
            "modified": self.modified.isoformat(),
            "encrypted": self.encrypted,
            "confirmed": self.confirmed,
            "reason": self.reason,
        }


def page_copies(listing: offsite.Listing) -> list[PageCopy]:
    """The incremental backups of a page store listing (``pagekeys.list_pages``), by name."""
    by_name = {o.name: o for o in listing.objects}
    backups: dict[str, dict[str, offsite.OffsiteObject]] = {}
    for obj in listing.objects:
        parsed = parse_page_name(obj.name)
        if parsed is None or parsed.backup is None:
            continue
        have = backups.setdefault(parsed.backup, {}).get(parsed.db)
        if have is None or (obj.confirmed, obj.encrypted) > (have.confirmed, have.encrypted):
            backups[parsed.backup][parsed.db] = obj
    return [_copy(name, found, by_name) for name, found in sorted(backups.items())]


def _copy(
    name: str, found: dict[str, offsite.OffsiteObject], by_name: dict[str, offsite.OffsiteObject]
) -> PageCopy:
    reason = "confirmed"
    size = 0
    wanted: set[str] = set()
    for db, obj in sorted(found.items()):
        size += obj.size
        origin = obj.record.origin if obj.record is not None else None
        if reason == "confirmed" and not obj.confirmed:
            reason = f"{obj.name}: {obj.reason}"
        elif reason == "confirmed" and origin is None:
            reason = f"{obj.name}: its record names no packs"
        if origin is None:
            continue
        wanted.update(origin.databases)
        for pack_id in origin.packs:
            pack = by_name.get(pack_object(db, pack_id, encrypted=obj.encrypted))
            size += pack.size if pack is not None else 0
            if reason == "confirmed" and (pack is None or not pack.confirmed):
                why = "missing" if pack is None else pack.reason
                reason = f"pack {db}/{pack_id}: {why}"
    missing = sorted(wanted - found.keys())
    if reason == "confirmed" and missing:
        reason = f"no manifest offsite for {', '.join(missing)}"
    return PageCopy(
        name=name,
        databases=tuple(sorted(found)),
        size=size,
        modified=max(o.modified for o in found.values()),
        encrypted=all(o.encrypted for o in found.values()),
        confirmed=reason == "confirmed",
        reason=reason,
    )
