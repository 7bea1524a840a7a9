"""The read check: read an archive to its end and prove every byte is what it was written as.

It reads every gzip member (CRC and length trailers), walks the tar stream strictly, parses the
metadata and, for format-2 archives, compares the size and SHA-256 of every database member with
what the metadata recorded. Nothing is extracted and ``integrity_check`` is not run: the SHA-256s
prove the bytes are the ones that passed ``integrity_check`` when the archive was written. (The
seed's legacy archives record no checksums; for them the gzip CRCs and the tar structure are all
there is to check.) Rot that keeps the metadata readable (a truncated tail, a flipped byte in a
database member) passes `list` but fails here.

``ReadCheckCache`` remembers each result under the file's identity (device, inode, size,
mtime_ns), so the prunes after every backup re-read an archive only when it changed. Bit rot
changes none of those: a scrub therefore always reads (``recheck``) and refreshes the cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from backup_sidecar.archiver import manifest as mf
from backup_sidecar.archiver.gzipstream import open_strict
from backup_sidecar.archiver.hashing import BackgroundSha256
from backup_sidecar.archiver.legacy import metadata_not_first
from backup_sidecar.archiver.model import DEFAULT_LIMITS, Limits
from backup_sidecar.archiver.tarstream import TarReader
from backup_sidecar.errors import CorruptArchiveError, OperationAbortedError

_CHUNK = 1 << 20
#: Results kept by a cache; the oldest are forgotten first (an archive is then read again).
_CACHE_ENTRIES = 4096
#: How often a thread waiting for another's check of the same file looks at its ``should_stop``.
_POLL_S = 0.1


@dataclass(frozen=True)
class FileIdentity:
    """What a cached result is keyed by: the same file, unchanged since it was read."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class _HashingRaw:
    """The archive file as the gzip reader reads it, hashing every byte read (its SHA-256)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()

    def read(self, size: int = -1, /) -> bytes:
        data = self._raw.read(size)
        self.digest.update(data)
        return data

    def drain(self) -> str:
        while self.read(_CHUNK):
            pass
        return self.digest.hexdigest()


def read_check(
    path: Path,
    *,
    limits: Limits = DEFAULT_LIMITS,
    should_stop: Callable[[], bool] = lambda: False,
    file_sha256: list[str] | None = None,
) -> FileIdentity:
    """Read ``path`` to its end; raise CorruptArchiveError naming the first fault found.

    Returns the identity of the file that was read. FileNotFoundError (the archive went away,
    e.g. pruned meanwhile) and OperationAbortedError pass through: neither says the archive is
    damaged. A link is never followed: it is not an archive. When it passes, the SHA-256 of
    the file's bytes as read is appended to ``file_sha256`` (given).
    """
    name = path.name.removesuffix(mf.ARCHIVE_SUFFIX)
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise CorruptArchiveError(name, f"cannot be read: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as raw:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CorruptArchiveError(name, "not a regular file")
        fcntl.flock(fd, fcntl.LOCK_SH)  # a prune skips an archive being read
        hashing = _HashingRaw(raw)
        try:
            _read_to_end(
                cast("BinaryIO", hashing), name=name, limits=limits, should_stop=should_stop
            )
            digest = hashing.drain()
        except (ValueError, RecursionError, OverflowError) as exc:
            # GzipFormatError, TarFormatError and ManifestError are ValueErrors; so is any
            # malformed number a hostile header carries; nesting and huge values give the others.
            fault = exc.fault if isinstance(exc, CorruptArchiveError) else str(exc)
            raise CorruptArchiveError(name, fault or type(exc).__name__) from None
        except OSError as exc:  # EIO: the medium itself fails
            raise CorruptArchiveError(name, f"read error: {exc.strerror or exc}") from None
    if file_sha256 is not None:
        file_sha256.append(digest)
    return FileIdentity.of(st)


def _read_to_end(
    raw: BinaryIO, *, name: str, limits: Limits, should_stop: Callable[[], bool]
) -> None:
    tar = TarReader(open_strict(raw, limit=limits.max_total_bytes))
    manifest: mf.Manifest | None = None
    members: dict[str, tuple[int, str]] = {}  # file -> (size, sha256)
    first = ""
    for member in tar.members():
        first = first or member.name
        if member.name == mf.METADATA_MEMBER:
            if manifest is not None:
                raise CorruptArchiveError(name, f"duplicate member {member.name!r}")
            if member.size > limits.max_metadata_bytes:
                raise CorruptArchiveError(name, f"{mf.METADATA_MEMBER} is {member.size} bytes")
            manifest = mf.parse_metadata(tar.read(member.size))
            continue
        if member.name in members:
            raise CorruptArchiveError(name, f"duplicate member {member.name!r}")
        with BackgroundSha256() as digest:
            while chunk := tar.read(_CHUNK):
                if should_stop():
                    raise OperationAbortedError(f"read check of {name!r}")
                digest.update(chunk)
        members[member.name] = (member.size, digest.hexdigest())
    tar.finish()
    if manifest is None:
        raise CorruptArchiveError(name, f"no {mf.METADATA_MEMBER} member")
    if not manifest.legacy and first != mf.METADATA_MEMBER:  # only the seed's may be elsewhere
        raise CorruptArchiveError(name, metadata_not_first(first))
    _compare(name, manifest, members)


def _compare(name: str, manifest: mf.Manifest, members: dict[str, tuple[int, str]]) -> None:
    """The members read against what the metadata promised."""
    if manifest.legacy:  # the seed's: what it holds counts, not what its includes asked for
        manifest = manifest.holding(members)
        if not manifest.members():
            raise CorruptArchiveError(name, "holds no database member")
    expected = set(manifest.members().values())
    if unexpected := sorted(set(members) - expected):
        raise CorruptArchiveError(name, f"unexpected member {unexpected[0]!r}")
    if missing := sorted(expected - set(members)):
        raise CorruptArchiveError(name, f"missing member {missing[0]!r}")
    for entry in manifest.databases.values():  # empty for legacy archives: no checksums
        size, digest_hex = members[entry.file]
        if size != entry.size_bytes:
            raise CorruptArchiveError(
                name, f"member {entry.file!r} is {size} bytes, metadata says {entry.size_bytes}"
            )
        if digest_hex != entry.sha256:
            raise CorruptArchiveError(name, f"member {entry.file!r}: sha256 mismatch")


class ReadCheckCache:
    """Read-check results by file identity, shared by the threads of one process."""

    def __init__(self, *, limits: Limits = DEFAULT_LIMITS, entries: int = _CACHE_ENTRIES) -> None:
        self._limits = limits
        self._entries = entries
        self._lock = threading.Lock()
        self._results: OrderedDict[FileIdentity, str | None] = OrderedDict()
        self._sums: dict[FileIdentity, str] = {}  # the file's SHA-256, of each passed check
        self._running: dict[FileIdentity, threading.Event] = {}  # checks being read now

    def check(self, path: Path, *, should_stop: Callable[[], bool] = lambda: False) -> str | None:
        """None if ``path`` passes the read check, else the fault; cached by identity. A check
        of the same file version already running on another thread (the prune after a
        backup, while the offsite upload of that archive starts) is waited for, not repeated."""
        try:
            known = FileIdentity.of(path.lstat())
        except FileNotFoundError:
            raise
        except OSError:
            known = None
        if known is None:
            return self.recheck(path, should_stop=should_stop)
        while True:
            with self._lock:
                if known in self._results:
                    self._results.move_to_end(known)
                    return self._results[known]
                running = self._running.get(known)
                if running is None:
                    self._running[known] = mine = threading.Event()
                    break
            while not running.wait(_POLL_S):
                if should_stop():
                    raise OperationAbortedError(f"read check of {path.name!r}")
        try:
            return self.recheck(path, should_stop=should_stop)
        finally:
            with self._lock:
                del self._running[known]
            mine.set()

    def recheck(self, path: Path, *, should_stop: Callable[[], bool] = lambda: False) -> str | None:
        """Read ``path`` again whatever the cache holds (a scrub), and remember the result."""
        identity: FileIdentity | None
        result: str | None = None
        digest: list[str] = []
        try:
            identity = read_check(
                path, limits=self._limits, should_stop=should_stop, file_sha256=digest
            )
        except CorruptArchiveError as exc:
            result, identity = exc.fault, _identity_or_none(path)
        if identity is not None:
            with self._lock:
                self._results[identity] = result
                self._results.move_to_end(identity)
                self._sums.pop(identity, None)
                if digest:
                    self._sums[identity] = digest[0]
                while len(self._results) > self._entries:
                    self._sums.pop(self._results.popitem(last=False)[0], None)
        return result

    def passed_sha256(self, path: Path) -> str | None:
        """The SHA-256 of the bytes a passed check of ``path`` (this version of the file, by
        identity) read, or None when none is cached. Rot keeps the identity: a caller trusts
        the result only for bytes that hash to it (the offsite upload compares what it sent)."""
        try:
            known = FileIdentity.of(path.lstat())
        except OSError:
            return None
        with self._lock:
            return self._sums.get(known) if self._results.get(known, "") is None else None


def _identity_or_none(path: Path) -> FileIdentity | None:
    try:
        return FileIdentity.of(path.lstat())
    except OSError:
        return None
