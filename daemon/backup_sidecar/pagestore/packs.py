"""Packs: immutable files of zstd-compressed pages, each slot named by its page's SHA-256.

A pack is written once, in order, and read by slot::

    frame 0 | frame 1 | ... | index | footer
    frame:  one zstd frame of up to FRAME_PAGES pages (slot s is in frame s // FRAME_PAGES)
    index:  one zstd frame: "PIDX", page size, frame pages, slot count, frame count,
            then per frame (offset u64, length u32), then per slot its SHA-256 (32 bytes)
    footer: index offset u64, index length u32, b"SCPAGES1"

Pages compress together in a frame (a 4 KiB page alone compresses far worse), while a
restore decompresses at most one frame to reach any page. The SHA-256 in the index lets the
rebuild check every page it takes from a pack, and lets a backup find pages stored before.
"""

from __future__ import annotations

import os
import secrets
import struct
import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from backup_sidecar.archiver.safefs import open_file
from backup_sidecar.errors import PackFormatError
from backup_sidecar.pagestore import fsio

if sys.version_info >= (3, 14):  # pragma: no cover - the stdlib module from 3.14 on
    from compression import zstd
else:
    from backports import zstd

SUFFIX = ".pack"
FRAME_PAGES = 64
PACK_PAGES = 8192
LEVEL = 3
_FOOTER = struct.Struct("<QI8s")
_FOOTER_MAGIC = b"SCPAGES1"
_INDEX_HEAD = struct.Struct("<4sIIII")
_INDEX_MAGIC = b"PIDX"
_FRAME = struct.Struct("<QI")
_DIGEST = 32


def new_pack_id() -> str:
    return secrets.token_hex(16)


def pack_file(pack_id: str) -> str:
    return pack_id + SUFFIX


@dataclass(frozen=True)
class PackIndex:
    """Where a pack's frames are and which page (by SHA-256) each slot holds."""

    pack_id: str
    page_size: int
    frame_pages: int
    frames: tuple[tuple[int, int], ...]
    digests: tuple[bytes, ...]


class PackWriter:
    """Writes one pack to a temporary file; ``finish`` publishes it under its final name."""

    def __init__(self, dirs: fsio.StoreDirs, *, page_size: int, level: int = LEVEL) -> None:
        self.pack_id = new_pack_id()
        self._dirs = dirs
        self._page_size = page_size
        self._level = level
        self._tmp, self._fd = fsio.create_temp(dirs.packs_fd, where=dirs.packs)
        self._pending: list[bytes] = []
        self._frames: list[tuple[int, int]] = []
        self._digests: list[bytes] = []
        self._offset = 0

    @property
    def slots(self) -> int:
        return len(self._digests)

    @property
    def full(self) -> bool:
        return self.slots >= PACK_PAGES

    def add(self, page: bytes, digest: bytes) -> int:
        """Append a page; returns its slot."""
        self._digests.append(digest)
        self._pending.append(page)
        if len(self._pending) == FRAME_PAGES:
            self._flush()
        return len(self._digests) - 1

    def _flush(self) -> None:
        if not self._pending:
            return
        frame = zstd.compress(b"".join(self._pending), level=self._level)
        fsio.write_all(self._fd, frame)
        self._frames.append((self._offset, len(frame)))
        self._offset += len(frame)
        self._pending = []

    def finish(self) -> int:
        """Write index and footer, fsync, rename into place; returns the pack's size."""
        self._flush()
        head = _INDEX_HEAD.pack(
            _INDEX_MAGIC, self._page_size, FRAME_PAGES, len(self._digests), len(self._frames)
        )
        table = b"".join(_FRAME.pack(o, n) for o, n in self._frames)
        index = zstd.compress(head + table + b"".join(self._digests), level=self._level)
        fsio.write_all(self._fd, index + _FOOTER.pack(self._offset, len(index), _FOOTER_MAGIC))
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        fsio.publish(self._dirs.packs_fd, self._tmp, pack_file(self.pack_id), replace=True)
        return self._offset + len(index) + _FOOTER.size

    def abort(self) -> None:
        """Drop the temporary file (after a failure): nothing was published."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        fsio.discard(self._dirs.packs_fd, self._tmp)


def read_index(packs_fd: int, pack_id: str, *, where: Path) -> PackIndex:
    """The index of a published pack; PackFormatError naming the pack if it is damaged."""
    fd = open_file(packs_fd, pack_file(pack_id), os.O_RDONLY, where=where / pack_file(pack_id))
    try:
        size = os.fstat(fd).st_size
        if size < _FOOTER.size:
            raise PackFormatError(pack_id, f"{size} bytes, shorter than its footer")
        offset, length, magic = _FOOTER.unpack(os.pread(fd, _FOOTER.size, size - _FOOTER.size))
        if magic != _FOOTER_MAGIC or offset + length + _FOOTER.size != size:
            raise PackFormatError(pack_id, "bad footer")
        raw = _decompress(os.pread(fd, length, offset), pack_id, "index", limit=64 << 20)
    finally:
        os.close(fd)
    return _parse_index(pack_id, raw, data_end=offset)


def _parse_index(pack_id: str, raw: bytes, *, data_end: int) -> PackIndex:
    if len(raw) < _INDEX_HEAD.size:
        raise PackFormatError(pack_id, "index too short")
    magic, page_size, frame_pages, n_slots, n_frames = _INDEX_HEAD.unpack_from(raw)
    if magic != _INDEX_MAGIC or frame_pages < 1 or page_size < 512 or page_size > 65536:
        raise PackFormatError(pack_id, "bad index header")
    if n_frames != -(-n_slots // frame_pages):
        raise PackFormatError(pack_id, f"{n_frames} frames cannot hold {n_slots} slots")
    table_end = _INDEX_HEAD.size + n_frames * _FRAME.size
    if len(raw) != table_end + n_slots * _DIGEST:
        raise PackFormatError(pack_id, "index length does not match its counts")
    frames = tuple(
        _FRAME.unpack_from(raw, _INDEX_HEAD.size + i * _FRAME.size) for i in range(n_frames)
    )
    if any(o + n > data_end for o, n in frames):
        raise PackFormatError(pack_id, "a frame lies past the data")
    digests = tuple(raw[i : i + _DIGEST] for i in range(table_end, len(raw), _DIGEST))
    return PackIndex(pack_id, page_size, frame_pages, frames, digests)


def _decompress(data: bytes, pack_id: str, what: str, *, limit: int) -> bytes:
    try:
        d = zstd.ZstdDecompressor()
        out = d.decompress(data, max_length=limit + 1)
        if len(out) > limit:
            raise PackFormatError(pack_id, f"{what}: expands past {limit} bytes")
        if not d.eof or d.unused_data:
            raise PackFormatError(pack_id, f"{what}: not exactly one complete zstd frame")
    except zstd.ZstdError as exc:
        raise PackFormatError(pack_id, f"{what}: {exc}") from exc
    return out


class PackReader:
    """Pages by (pack, slot), through a small cache of decompressed frames."""

    def __init__(self, dirs: fsio.StoreDirs, *, cache_frames: int = 64) -> None:
        self._dirs = dirs
        self._indexes: dict[str, PackIndex] = {}
        self._frames: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._cache = cache_frames
        self._fds: dict[str, int] = {}

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def index(self, pack_id: str) -> PackIndex:
        if pack_id not in self._indexes:
            self._indexes[pack_id] = read_index(
                self._dirs.packs_fd, pack_id, where=self._dirs.packs
            )
        return self._indexes[pack_id]

    def page(self, pack_id: str, slot: int) -> tuple[bytes, bytes]:
        """The page in ``slot`` and the SHA-256 the index records for it."""
        idx = self.index(pack_id)
        if not 0 <= slot < len(idx.digests):
            raise PackFormatError(pack_id, f"no slot {slot} (it has {len(idx.digests)})")
        frame_no, pos = divmod(slot, idx.frame_pages)
        data = self._frame(idx, frame_no)
        page = data[pos * idx.page_size : (pos + 1) * idx.page_size]
        if len(page) != idx.page_size:
            raise PackFormatError(pack_id, f"frame {frame_no} is short of slot {slot}")
        return page, idx.digests[slot]

    def _frame(self, idx: PackIndex, frame_no: int) -> bytes:
        key = (idx.pack_id, frame_no)
        if key in self._frames:
            self._frames.move_to_end(key)
            return self._frames[key]
        offset, length = idx.frames[frame_no]
        fd = self._fds.get(idx.pack_id)
        if fd is None:
            name = pack_file(idx.pack_id)
            fd = open_file(self._dirs.packs_fd, name, os.O_RDONLY, where=self._dirs.packs / name)
            self._fds[idx.pack_id] = fd
        raw = os.pread(fd, length, offset)
        limit = idx.frame_pages * idx.page_size
        data = _decompress(raw, idx.pack_id, f"frame {frame_no}", limit=limit)
        self._frames[key] = data
        if len(self._frames) > self._cache:
            self._frames.popitem(last=False)
        return data
