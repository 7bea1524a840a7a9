"""Just enough POSIX tar: write regular-file members, and read them back strictly.

Writing by hand keeps the archive a plain stream (headers, data, padding) that can be split
into gzip members. Reading by hand lets verification refuse what ``tarfile`` would quietly
accept: links, devices, directories, odd names, and data hidden after the end-of-archive marker.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from backup_sidecar.archiver.membername import member_name_problem
from backup_sidecar.errors import TarFormatError

BLOCK = 512
_END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
_REGULAR_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE)
_MAX_PAX_BYTES = 1 << 16
#: The largest member size this reader accepts: what a pax ``size`` may say (the octal field
#: stops at 8 GiB); nothing real comes close, it only keeps hostile numbers bounded.
MAX_MEMBER_SIZE = (1 << 63) - 1


def member_header(name: str, *, size: int, mtime: int) -> bytes:
    """A POSIX (pax) header block for a regular file owned by nobody in particular."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o600
    info.type = tarfile.REGTYPE
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


def padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def end_of_archive() -> bytes:
    return _END_OF_ARCHIVE


@dataclass(frozen=True)
class Member:
    name: str
    size: int


class TarReader:
    """Iterates regular-file members of an uncompressed tar stream, refusing everything else."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._remaining = 0
        self._pad = 0

    def members(self) -> Iterator[Member]:
        while True:
            self._skip_rest()
            member = self._next_header()
            if member is None:
                return
            yield member

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes of the current member's data (b"" at its end)."""
        n = min(n, self._remaining)
        data = self._exact(n)
        self._remaining -= n
        return data

    def finish(self) -> None:
        """Read to the end of the stream: only zero padding may follow the end marker."""
        while chunk := self._stream.read(1 << 20):
            if chunk.count(0) != len(chunk):
                raise TarFormatError("data after the end of the tar archive")

    def _skip_rest(self) -> None:
        while self._remaining:
            self.read(1 << 20)
        self._exact(self._pad)
        self._pad = 0

    def _next_header(self) -> Member | None:
        pax: dict[str, str] = {}
        while True:
            block = self._exact(BLOCK)
            if block.count(0) == BLOCK:
                if self._exact(BLOCK).count(0) != BLOCK:
                    raise TarFormatError("a lone zero block inside the tar stream")
                if pax:
                    raise TarFormatError("pax header with no member after it")
                return None
            try:
                info = tarfile.TarInfo.frombuf(block, "utf-8", "strict")
            except (tarfile.HeaderError, UnicodeDecodeError) as exc:
                raise TarFormatError(f"invalid tar header: {exc}") from None
            if info.type == tarfile.XHDTYPE and not pax:
                pax = self._read_pax(info.size)
                continue
            return self._regular(info, pax)

    def _regular(self, info: tarfile.TarInfo, pax: dict[str, str]) -> Member:
        name = pax.get("path", info.name)
        size = _pax_number(pax["size"], "size") if "size" in pax else info.size
        if info.type not in _REGULAR_TYPES:
            kind = {
                tarfile.SYMTYPE: "symlink",
                tarfile.LNKTYPE: "hard link",
                tarfile.CHRTYPE: "character device",
                tarfile.BLKTYPE: "block device",
                tarfile.FIFOTYPE: "FIFO",
                tarfile.DIRTYPE: "directory",
            }.get(info.type, f"type {info.type!r}")
            raise TarFormatError(f"member {_shown(name)} is a {kind}, not a regular file")
        if problem := member_name_problem(name):
            raise TarFormatError(f"member {_shown(name)} is not a plain file name: it {problem}")
        if size < 0:
            raise TarFormatError(f"member {_shown(name)} has a negative size")
        if size > MAX_MEMBER_SIZE:
            raise TarFormatError(f"member {_shown(name)} declares {size} bytes, more than allowed")
        self._remaining = size
        self._pad = -size % BLOCK
        return Member(name=name, size=size)

    def _read_pax(self, size: int) -> dict[str, str]:
        """The records of a pax extended header, each ``"<length> <key>=<value>\\n"`` with a
        decimal length counting the whole record; anything else is refused."""
        if size > _MAX_PAX_BYTES:
            raise TarFormatError("pax header too large")
        data = self._exact(size)
        self._exact(-size % BLOCK)
        records: dict[str, str] = {}
        pos = 0
        while pos < len(data):
            space = data.find(b" ", pos, pos + 8)
            length = _decimal(data[pos:space]) if space > pos else None
            if length is None or length <= space - pos or pos + length > len(data):
                raise TarFormatError("malformed pax header: bad record length")
            record = data[space + 1 : pos + length]
            key, eq, value = record.partition(b"=")
            if not eq or not key or not record.endswith(b"\n"):
                raise TarFormatError("malformed pax header: a record is not key=value")
            try:
                records[key.decode("utf-8")] = value[:-1].decode("utf-8")
            except UnicodeDecodeError:
                raise TarFormatError("malformed pax header: not UTF-8") from None
            pos += length
        return records

    def _exact(self, n: int) -> bytes:
        data = self._stream.read(n) if n else b""
        if len(data) != n:
            raise TarFormatError("tar stream ends in the middle of a member")
        return data


def _decimal(text: bytes) -> int | None:
    """A non-negative decimal of at most 19 ASCII digits (no sign, space or underscore, which
    ``int`` would accept), else None."""
    if not 0 < len(text) <= 19 or not text.isdigit():
        return None
    return int(text)


def _pax_number(value: str, key: str) -> int:
    number = _decimal(value.encode("ascii", "replace"))
    if number is None:
        raise TarFormatError(f"malformed pax header: {key} {_shown(value)} is not a number")
    return number


def _shown(text: str) -> str:
    """``text`` quoted for a one-line error, cut short: a pax record may hold 64 KiB."""
    return repr(text) if len(text) <= 64 else repr(text[:61]) + "..."
