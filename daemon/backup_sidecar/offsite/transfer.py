"""Streams between local files and the store, hashing what passes, in bounded memory."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from backup_sidecar.errors import ArchiveExistsError, OffsiteUploadAbandonedError

CHUNK = 1024 * 1024


class HashingChunks:
    """Pass chunks through, keeping the SHA-256 and the count of what went by."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self._hash = hashlib.sha256()
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self._hash.update(chunk)
            self.size += len(chunk)
            yield chunk

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class HashingFile:
    """A ``read``/``readinto`` file over ``source`` keeping the SHA-256 and the count of
    what was read (the local archive while it is uploaded, encrypted or not)."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._source.read(size)
        self._hash.update(data)
        self.size += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class HashingReader:
    """A ``read(n)`` file over an iterator of buffers (a GET stream), hashing what it hands out."""

    def __init__(self, chunks: Iterable[bytes | memoryview]) -> None:
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1, /) -> bytes:
        if not self._pending:
            nxt = next(self._chunks, None)
            if nxt is None:
                return b""
            self._pending = memoryview(nxt)
        n = len(self._pending) if size < 0 else min(size, len(self._pending))
        out = bytes(self._pending[:n])
        self._pending = self._pending[n:]
        self._hash.update(out)
        self.size += n
        return out

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Read (and hash) what is left, so size and digest cover the whole object."""
        while self.read(CHUNK):
            pass

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def until(
    chunks: Iterable[bytes], cancel: Callable[[], bool] | None, url: str, name: str
) -> Iterable[bytes]:
    """``chunks`` until ``cancel()`` is true, then OffsiteUploadAbandonedError (not retried:
    the caller stops; its unfinished parts are left for ``abort_orphaned_uploads``)."""
    if cancel is None:
        return chunks

    def checked() -> Iterator[bytes]:
        for chunk in chunks:
            if cancel():
                raise OffsiteUploadAbandonedError(url, name)
            yield chunk

    return checked()


class Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def file_chunks(f: Reader, size: int = CHUNK) -> Iterator[bytes]:
    while chunk := f.read(size):
        yield chunk


def open_source(path: Path) -> BinaryIO:
    """Open a local file to upload without following a link (the backup directory is shared
    ground); a link or a non-regular file is an OSError naming the path."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def publish_file(dest: Path, fill: Callable[[BinaryIO], None]) -> None:
    """Write ``dest`` through ``fill`` into a temp file beside it, fsync, then link it into
    place (never over an existing file) and fsync the directory; on any error nothing is left."""
    if dest.exists() or dest.is_symlink():
        raise ArchiveExistsError(dest)
    temp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.offsite-part")
    try:
        with temp.open("xb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temp, dest)
        except FileExistsError:
            raise ArchiveExistsError(dest) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    dirfd = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
