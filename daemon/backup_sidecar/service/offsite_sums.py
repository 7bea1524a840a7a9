"""Which local archives are offsite: a confirmed object of the same name is this sidecar's copy
only when its record's source SHA-256 is the local archive's.

A same-named object may have been uploaded by another sidecar that shared the prefix (same
policy, same second) or planted: counting it would leave this archive with no offsite copy
while every gauge said it had one. The local SHA-256 is computed once per file identity
(device, inode, size, mtime_ns, as the read-check cache keys its results) and kept.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import structlog
from prometheus_client import Counter

from backup_sidecar import archiver, offsite
from backup_sidecar.archiver.readcheck import FileIdentity
from backup_sidecar.service.offsite_state import UploaderState

log = structlog.get_logger(__name__)

_CHUNK = 1 << 20
_ENTRIES = 4096


class SourceSums:
    """SHA-256 of local archives by file identity, shared by the threads of one process."""

    def __init__(self, *, entries: int = _ENTRIES) -> None:
        self._entries = entries
        self._lock = threading.Lock()
        self._sums: OrderedDict[FileIdentity, str] = OrderedDict()

    def sha256(self, path: Path) -> str:
        """The SHA-256 of ``path`` (never through a link; an OSError if it cannot be read)."""
        known = FileIdentity.of(path.lstat())
        with self._lock:
            if known in self._sums:
                self._sums.move_to_end(known)
                return self._sums[known]
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(f"{path} is not a regular file")
            digest = hashlib.sha256()
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        with self._lock:
            self._sums[FileIdentity.of(st)] = digest.hexdigest()
            while len(self._sums) > self._entries:
                self._sums.popitem(last=False)
        return digest.hexdigest()


@dataclass(frozen=True)
class Mismatch:
    """A confirmed object named like a local archive, made from other bytes."""

    archive: archiver.ArchiveInfo
    object: str
    local_sha256: str
    source_sha256: str


@dataclass(frozen=True)
class Split:
    """Local archives sorted by what the store holds of them (newest first, as given)."""

    pending: list[archiver.ArchiveInfo] = field(default_factory=list)
    confirmed: dict[str, datetime] = field(default_factory=dict)  # object name -> upload time
    mismatched: list[Mismatch] = field(default_factory=list)

    @property
    def waiting(self) -> int:
        """Not offsite: pending plus mismatched (the gauge of pending archives)."""
        return len(self.pending) + len(self.mismatched)


def split(
    local: Iterable[archiver.ArchiveInfo],
    objects: Iterable[offsite.OffsiteObject],
    *,
    suffix: str,
    sums: SourceSums,
) -> Split:
    """Pending (no confirmed object of its name, or one whose record predates source checksums
    and cannot be compared: encrypted), confirmed (the record's source SHA-256 is the local
    archive's; a plaintext object's own SHA-256 in an older record), or mismatched."""
    by_name = {o.name: o for o in objects if o.confirmed and o.record is not None}
    out = Split()
    for archive in local:
        obj = by_name.get(archive.path.name + suffix)
        if obj is None or obj.record is None:
            out.pending.append(archive)
            continue
        theirs = obj.record.source_sha256
        if theirs is None and not obj.record.encrypted and not obj.encrypted:
            theirs = obj.record.sha256  # an older plaintext record: the stored bytes are it
        if theirs is None:
            out.pending.append(archive)
            continue
        try:
            mine = sums.sha256(archive.path)
        except FileNotFoundError:  # pruned meanwhile: nothing to count or upload
            continue
        if mine == theirs:
            out.confirmed[obj.name] = obj.modified
        else:
            out.mismatched.append(Mismatch(archive, obj.name, mine, theirs))
    return out


class MismatchReport:
    """Says each same-named object made from other bytes once per process: a warning and a
    ``mismatch`` failure. It is never counted offsite, never overwritten (it may be another
    sidecar's only copy): the archive stays pending until an operator resolves it."""

    def __init__(self, failures: Counter) -> None:
        self._failures = failures
        self._told: set[tuple[str, str]] = set()

    def report(self, mismatched: list[Mismatch], *, state: UploaderState | None = None) -> None:
        if state is not None:  # (the web page's offsite column)
            state.mismatched({m.archive.name: m.object for m in mismatched})
        for m in mismatched:
            if (m.object, m.source_sha256) in self._told:
                continue
            self._told.add((m.object, m.source_sha256))
            log.warning(
                "offsite_source_mismatch",
                archive=m.archive.name,
                object=m.object,
                local_sha256=m.local_sha256,
                record_source_sha256=m.source_sha256,
            )
            self._failures.labels("mismatch").inc()
