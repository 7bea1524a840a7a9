"""The layout of a prefix, and the checksum record kept beside each object.

``<prefix>/<name>`` is the object (an archive, ``.age`` when encrypted);
``<prefix>/.offsite/sums/<name>.json`` its checksum record, written only after the object is
complete and its size checked: the SHA-256 and size of the stored bytes, the ETag the store
gave the object, and the SHA-256 and size of the local archive it was made from (the source;
records written before ``source_sha256`` existed lack it and stay readable).
A companion object rather than object metadata, because the SHA-256 of a
streamed (and encrypted) object is known only at its end, after a multipart upload has fixed
its metadata, and because a ``file://`` store keeps no metadata. The record's presence is also
the commit mark: an object without one is an unfinished upload.
``<prefix>/.offsite/lease/<generation>`` and ``.offsite/clock/<id>`` belong to the lease.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeGuard

from backup_sidecar.errors import RecordError

RECORD_DIR = ".offsite/sums"
LEASE_DIR = ".offsite/lease"
CLOCK_DIR = ".offsite/clock"
#: An incremental backup's manifest record lists every pack it needs (35 bytes each).
RECORD_MAX_BYTES = 1024 * 1024
#: How many packs an origin may name.
MAX_PACKS = 25_000
ENCRYPTED_SUFFIX = ".age"

# The archiver's names (1-128 of A-Z a-z 0-9 . _ - from a letter or digit) with their suffixes.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PACK_ID = re.compile(r"^[0-9a-f]{32}$")


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name)) and ".." not in name


def join(prefix: str, *parts: str) -> str:
    return "/".join(p for p in (prefix, *parts) if p)


@dataclass(frozen=True)
class Origin:
    """What the archive carries, copied into its record at upload (the object itself may be
    unreadable without the identity): its policy, creation sequence and time, and the names of
    the databases it holds. Offsite retention groups and orders copies by it; a copy without
    one (or with a malformed one) is never pruned: nothing proves whose it is."""

    policy: str
    sequence: int | None
    created_at: datetime
    databases: tuple[str, ...]
    #: An incremental backup's manifest: every pack it needs (those its pages are in, and
    #: the bases of their deltas, transitively), so offsite retention can tell which packs a
    #: kept backup needs without reading (or decrypting) anything. Empty for an archive.
    packs: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "policy": self.policy,
            "sequence": self.sequence,
            "created_at": self.created_at.isoformat(),
            "databases": list(self.databases),
        }
        if self.packs:
            body["packs"] = list(self.packs)
        return body

    @property
    def newness(self) -> tuple[bool, int, datetime]:
        """The archiver's order (creation sequence first, never the wall clock alone)."""
        return (self.sequence is not None, self.sequence or 0, self.created_at)


def parse_origin(body: object) -> Origin | None:
    """An Origin from an untrusted record's ``origin`` value; None when absent or malformed."""
    if not isinstance(body, dict):
        return None
    policy, sequence = body.get("policy"), body.get("sequence")
    created, databases = body.get("created_at"), body.get("databases")
    if not isinstance(policy, str) or not valid_name(policy):
        return None
    if sequence is not None and not _is_count(sequence):
        return None
    if not isinstance(databases, list) or not 0 < len(databases) <= 1000:
        return None
    if not all(isinstance(d, str) and 0 < len(d) <= 200 for d in databases):
        return None
    try:
        when = datetime.fromisoformat(created) if isinstance(created, str) else None
    except ValueError:
        return None
    if when is None or when.tzinfo is None:
        return None
    packs = body.get("packs", [])
    if not isinstance(packs, list) or len(packs) > MAX_PACKS:
        return None
    if not all(isinstance(p, str) and _PACK_ID.match(p) for p in packs):
        return None
    return Origin(policy, sequence, when, tuple(sorted(set(databases))), tuple(sorted(set(packs))))


@dataclass(frozen=True)
class Record:
    """What was sent: the stored bytes' size and SHA-256, and the ETag the store answered;
    and where the archive came from (``origin``, None in records written without one)."""

    name: str
    size: int
    sha256: str
    etag: str | None
    encrypted: bool
    source_size: int
    origin: Origin | None = None
    #: SHA-256 of the local archive uploaded (before encryption); None in older records.
    source_sha256: str | None = None

    def to_json(self) -> bytes:
        body: dict[str, Any] = {
            "format": 1,
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "etag": self.etag,
            "encrypted": self.encrypted,
            "source_size": self.source_size,
            "source_sha256": self.source_sha256,
        }
        if self.origin is not None:
            body["origin"] = self.origin.to_json()
        return json.dumps(body, sort_keys=True).encode()


def parse_record(name: str, raw: bytes) -> Record:
    """A record from untrusted bytes: every malformation is one RecordError."""
    if len(raw) > RECORD_MAX_BYTES:
        raise RecordError(f"checksum record over {RECORD_MAX_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise RecordError(f"checksum record is not JSON ({type(exc).__name__})") from None
    if not isinstance(body, dict) or body.get("format") != 1:
        raise RecordError("checksum record has no format 1")
    size, sha, etag = body.get("size"), body.get("sha256"), body.get("etag")
    source_size = body.get("source_size")
    if body.get("name") != name:
        raise RecordError(f"checksum record names {str(body.get('name'))[:80]!r}")
    if not _is_count(size) or not _is_count(source_size):
        raise RecordError("checksum record has no valid size")
    if not isinstance(sha, str) or not _SHA256.match(sha):
        raise RecordError("checksum record has no valid sha256")
    if etag is not None and not isinstance(etag, str):
        raise RecordError("checksum record has an invalid etag")
    source_sha = body.get("source_sha256")
    if source_sha is not None and not (isinstance(source_sha, str) and _SHA256.match(source_sha)):
        raise RecordError("checksum record has an invalid source_sha256")
    return Record(
        name=name,
        size=size,
        sha256=sha,
        etag=etag,
        encrypted=body.get("encrypted") is True,
        source_size=source_size,
        origin=parse_origin(body.get("origin")),
        source_sha256=source_sha,
    )


def _is_count(value: object) -> TypeGuard[int]:
    return type(value) is int and 0 <= value < 2**63
