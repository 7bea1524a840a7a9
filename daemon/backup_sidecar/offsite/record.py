"""The layout of a prefix, and the checksum record kept beside each object.

``<prefix>/<name>`` is the object (an archive, ``.age`` when encrypted);
``<prefix>/.offsite/sums/<name>.json`` its checksum record, written only after the object is
complete and its size checked: the SHA-256 and size of the stored bytes and the ETag the store
gave the object. A companion object rather than object metadata, because the SHA-256 of a
streamed (and encrypted) object is known only at its end, after a multipart upload has fixed
its metadata, and because a ``file://`` store keeps no metadata. The record's presence is also
the commit mark: an object without one is an unfinished upload.
``<prefix>/.offsite/lease/<generation>`` and ``.offsite/clock/<id>`` belong to the lease.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TypeGuard

from backup_sidecar.errors import RecordError

RECORD_DIR = ".offsite/sums"
LEASE_DIR = ".offsite/lease"
CLOCK_DIR = ".offsite/clock"
RECORD_MAX_BYTES = 64 * 1024
ENCRYPTED_SUFFIX = ".age"

# The archiver's names (1-128 of A-Z a-z 0-9 . _ - from a letter or digit) with their suffixes.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name)) and ".." not in name


def join(prefix: str, *parts: str) -> str:
    return "/".join(p for p in (prefix, *parts) if p)


@dataclass(frozen=True)
class Record:
    """What was sent: the stored bytes' size and SHA-256, and the ETag the store answered."""

    name: str
    size: int
    sha256: str
    etag: str | None
    encrypted: bool
    source_size: int

    def to_json(self) -> bytes:
        body = {
            "format": 1,
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "etag": self.etag,
            "encrypted": self.encrypted,
            "source_size": self.source_size,
        }
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
    return Record(
        name=name,
        size=size,
        sha256=sha,
        etag=etag,
        encrypted=body.get("encrypted") is True,
        source_size=source_size,
    )


def _is_count(value: object) -> TypeGuard[int]:
    return type(value) is int and 0 <= value < 2**63
