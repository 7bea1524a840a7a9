"""One listed object's verdict: confirmed, or why not (its checksum record read and held
against the object). Archives (``listing.py``) and page store objects (``pagekeys.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from backup_sidecar.errors import OffsiteUnsafeEntryError, RecordError
from backup_sidecar.offsite import record as rec
from backup_sidecar.offsite.objects import object_fault
from backup_sidecar.offsite.results import OffsiteObject

if TYPE_CHECKING:
    from backup_sidecar.offsite.meta import Meta

PLAINTEXT_REFUSED = (
    "a plaintext object in a store the config encrypts (offsite.encryption.recipients): "
    "not counted, never restored"
)


def listed_object(
    name: str,
    meta: Meta,
    *,
    read_record: Callable[[], rec.Record | None] | None,
    encrypted_only: bool,
) -> OffsiteObject:
    """``name``'s verdict; ``read_record`` None when the object has no checksum record (an
    unfinished upload). An unreadable record is the reason, never an error."""
    record = None
    reason = "no checksum record (upload unfinished)"
    encrypted = name.endswith(rec.ENCRYPTED_SUFFIX)
    if read_record is not None:
        try:
            record = read_record()
        except (RecordError, OffsiteUnsafeEntryError) as exc:
            reason = str(exc)
        else:
            if record is not None:
                reason = object_fault(record, meta) or "confirmed"
    if encrypted_only and not encrypted and reason == "confirmed":
        reason = PLAINTEXT_REFUSED
    return OffsiteObject(
        name=name,
        size=meta.size,
        modified=meta.modified,
        encrypted=encrypted,
        confirmed=reason == "confirmed",
        reason=reason,
        record=record,
    )
