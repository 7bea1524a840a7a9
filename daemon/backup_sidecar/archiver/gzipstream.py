"""Standard gzip, fast: ISA-L compression for writing, a strict multi-member reader for verifying.

The writer produces ordinary gzip members (GNU ``tar -xzf`` and Python's gzip read them). The
reader exists because ``tarfile`` never checks the gzip CRC or trailer and Python's gzip module
ignores trailing zero padding: verification must read every member to its end and refuse any
byte that is not part of a valid gzip member.
"""

from __future__ import annotations

import io
import struct
from typing import BinaryIO

from isal import isal_zlib

from backup_sidecar.errors import GzipFormatError, OutputLimitError

GZIP_MAGIC = b"\x1f\x8b"
_FCOMMENT = 0x10
_OS_UNKNOWN = 255
_GZIP_WBITS = 31
_CHUNK = 1 << 20
READ_BUFFER = _CHUNK
#: Empty members are valid gzip, but no writer of these archives makes them (backup-sidecar
#: never does, the seed's tarfile writes one member): more than this many is a hostile file.
MAX_EMPTY_MEMBERS = 16
#: The most gzip members a reader accepts. Writers of these archives make few: backup-sidecar 2
#: (metadata, then the rest), the seed's tarfile, GNU gzip and pigz 1, a hand concatenation
#: (`cat a.gz b.gz`) a handful. Each member costs a new decompressor and a copy of the read
#: buffer's rest, so an archive re-gzipped as 600,000 one-byte members took a minute of CPU
#: per verify or prune; past this many it is refused as soon as the member begins.
MAX_MEMBERS = 1024


def compress_member(data: bytes, *, level: int) -> bytes:
    """One complete gzip member holding ``data``."""
    comp = isal_zlib.compressobj(level, isal_zlib.DEFLATED, _GZIP_WBITS)
    return comp.compress(data) + comp.flush()


def member_bound(size: int) -> int:
    """The most bytes ``compress_member`` can need for ``size`` input bytes (a generous bound:
    stored deflate blocks cost 5 bytes per 64 KiB, the gzip header and trailer 18)."""
    return size + size // 8 + 64


def compress_member_exact(data: bytes, *, level: int, size: int) -> bytes:
    """One gzip member holding ``data`` that is exactly ``size`` bytes long: the spare room is
    the header's comment field (FCOMMENT, filled with spaces), which every gzip reader skips.
    Raises ValueError when ``data`` does not compress into ``size`` bytes."""
    comp = isal_zlib.compressobj(level, isal_zlib.DEFLATED, -15)
    deflated = comp.compress(data) + comp.flush()
    trailer = struct.pack("<II", isal_zlib.crc32(data), len(data) & 0xFFFFFFFF)
    header = GZIP_MAGIC + bytes([8, _FCOMMENT, 0, 0, 0, 0, 0, _OS_UNKNOWN])
    room = size - len(header) - len(deflated) - len(trailer) - 1  # the comment's closing NUL
    if room < 0:
        raise ValueError(f"{len(data)} bytes do not compress into {size}")
    return header + b" " * room + b"\0" + deflated + trailer


class GzipWriter(io.RawIOBase):
    """A write-only stream that gzips into ``raw`` as ONE member; ``close()`` ends the member."""

    def __init__(self, raw: BinaryIO, *, level: int) -> None:
        super().__init__()
        self._raw = raw
        self._comp = isal_zlib.compressobj(level, isal_zlib.DEFLATED, _GZIP_WBITS)
        self.bytes_in = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data)
        self._raw.write(self._comp.compress(view))
        self.bytes_in += view.nbytes
        return view.nbytes

    def close(self) -> None:
        if not self.closed:
            self._raw.write(self._comp.flush())
        super().close()


class StrictGzipReader(io.RawIOBase):
    """Reads the concatenated members of a gzip file, failing on any fault instead of guessing.

    Faults: an empty file, bytes that are not gzip, a bad CRC or length trailer, a truncated
    member, anything after the last member (zero padding included), and output beyond
    ``limit`` bytes (a decompression bomb). ``limit`` may be lowered while reading.
    """

    def __init__(self, raw: BinaryIO, *, limit: int, first_member_only: bool = False) -> None:
        super().__init__()
        self._raw = raw
        self.limit = limit
        self._first_only = first_member_only
        self.bytes_out = 0
        self._decomp = isal_zlib.decompressobj(_GZIP_WBITS)
        self._pending = b""
        self._started = False
        self._eof = False
        self._member_out = 0  # bytes the current member has produced so far
        self._empty_members = 0
        self.members = 1  # members begun so far (the first begins with the first byte)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            return self._readinto(memoryview(buffer).cast("B"))
        except isal_zlib.error as exc:  # type: ignore[misc]  # untyped extension
            raise GzipFormatError(f"invalid gzip data: {exc}") from exc

    def _readinto(self, view: memoryview) -> int:
        while not self._eof:
            if not self._pending:
                self._pending = self._decomp.decompress(self._next_input(), len(view))
                self._member_out += len(self._pending)
                self._check_member_end()
                continue
            n = min(len(view), len(self._pending))
            view[:n] = self._pending[:n]
            self._pending = self._pending[n:]
            self._count(n)
            return n
        if self._pending:
            n = min(len(view), len(self._pending))
            view[:n] = self._pending[:n]
            self._pending = self._pending[n:]
            self._count(n)
            return n
        return 0

    def _count(self, n: int) -> None:
        self.bytes_out += n
        if self.bytes_out > self.limit:
            raise OutputLimitError(self.limit)

    def _next_input(self) -> bytes:
        tail = self._decomp.unconsumed_tail
        if tail:
            return bytes(tail)
        data = self._raw.read(_CHUNK)
        if not self._started:
            if not data:
                raise GzipFormatError("empty file")
            if not data.startswith(GZIP_MAGIC[: len(data)]):
                raise GzipFormatError("not gzip data")
            self._started = True
        if not data:
            raise GzipFormatError("truncated: gzip stream ends inside a member")
        return data

    def _check_member_end(self) -> None:
        """At each member's end, start the next one (a loop, not recursion: a chunk may hold
        thousands of tiny members), refusing more than ``MAX_EMPTY_MEMBERS`` empty ones and
        more than ``MAX_MEMBERS`` in all (counted as each begins, before it is decompressed)."""
        while self._decomp.eof:
            if self._first_only:
                self._eof = True  # the caller wants the first member alone (the metadata)
                return
            if self._member_out == 0:
                self._empty_members += 1
                if self._empty_members > MAX_EMPTY_MEMBERS:
                    raise GzipFormatError(f"more than {MAX_EMPTY_MEMBERS} empty gzip members")
            rest = self._decomp.unused_data
            if len(rest) < 2:
                rest += self._raw.read(2 - len(rest))
            if not rest:
                self._eof = True
                return
            if rest[:2] != GZIP_MAGIC:
                raise GzipFormatError("trailing garbage after the last gzip member")
            self.members += 1
            if self.members > MAX_MEMBERS:
                raise GzipFormatError(
                    f"more than {MAX_MEMBERS} gzip members (no writer of these archives makes "
                    "more than a few)"
                )
            self._decomp = isal_zlib.decompressobj(_GZIP_WBITS)
            out = self._decomp.decompress(rest, _CHUNK)
            self._member_out = len(out)
            self._pending += out


def open_strict(raw: BinaryIO, *, limit: int, first_member_only: bool = False) -> io.BufferedReader:
    """A buffered strict reader; ``first_member_only`` ends the stream after the first member,
    so reading the metadata never decompresses (or judges) the databases behind it."""
    reader = StrictGzipReader(raw, limit=limit, first_member_only=first_member_only)
    return io.BufferedReader(reader, buffer_size=READ_BUFFER)
