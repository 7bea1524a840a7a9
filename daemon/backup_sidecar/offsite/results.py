"""What the Store answers: an upload's result, a confirmation, a listing (plain frozen values)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from backup_sidecar.offsite.record import Record


@dataclass(frozen=True)
class Uploaded:
    name: str
    size: int
    sha256: str
    etag: str | None
    encrypted: bool
    attempts: int
    source_sha256: str


@dataclass(frozen=True)
class Confirmation:
    """``confirmed`` only when the stored object's size and ETag are those its checksum record
    holds (and, with ``deep``, its bytes hash to the record's SHA-256); ``reason`` says why not."""

    name: str
    confirmed: bool
    size: int | None
    sha256: str | None
    reason: str


@dataclass(frozen=True)
class OffsiteObject:
    name: str
    size: int
    modified: datetime
    encrypted: bool
    confirmed: bool
    reason: str
    record: Record | None


@dataclass(frozen=True)
class ListProblem:
    key: str
    reason: str


@dataclass(frozen=True)
class Listing:
    objects: tuple[OffsiteObject, ...]
    problems: tuple[ListProblem, ...]
