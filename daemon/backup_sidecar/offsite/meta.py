"""What a HEAD or a listing says of one object (both backends give the same)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Meta:
    """One object's size, ETag and last-modified time; ``modified`` is the store's clock."""

    key: str
    size: int
    modified: datetime
    etag: str | None
    #: From a ``file://`` store: its ETag is compared by ``localfs.same_version``.
    local: bool = False
