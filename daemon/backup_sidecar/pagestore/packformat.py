"""The pack file format: immutable files of zstd-compressed pages, each slot named by SHA-256.

A pack is written once, in order, and read by slot::

    frame 0 | frame 1 | ... | index | footer
    frame:  one zstd frame: either up to FRAME_PAGES whole pages compressed together (a 4 KiB
            page alone compresses far worse), or ONE page compressed against its base (the
            same page of the parent backup, another slot, as a zstd prefix: a changed page
            mostly repeats its old version, and stores as a small delta)
    index:  one zstd frame: head (magic, page size, slot count, frame count, base count), the
            base packs (16 bytes each), per frame (offset, length, first slot, pages, base
            pack number or -1, base slot, depth), per slot its SHA-256
    footer: index offset u64, index length u32, b"SCPAGES2"

A delta's depth is its base's depth + 1 (a whole page: 0); writers cap it at MAX_DEPTH, so a
page is rebuilt from at most MAX_DEPTH deltas. A pack's base packs must be kept with it: the
GC marks them (``bases``) as it marks the packs the manifests name.
"""

from __future__ import annotations

import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

from backup_sidecar.archiver.safefs import open_file
from backup_sidecar.errors import PackFormatError

if sys.version_info >= (3, 14):  # pragma: no cover - the stdlib module from 3.14 on
    from compression import zstd
else:
    from backports import zstd

__all__ = ["zstd"]

SUFFIX = ".pack"
FRAME_PAGES = 64
PACK_PAGES = 8192
MAX_DEPTH = 8
LEVEL = 3
FOOTER = struct.Struct("<QI8s")
FOOTER_MAGIC = b"SCPAGES2"
HEAD = struct.Struct("<4sIIII")
INDEX_MAGIC = b"PIDX"
FRAME = struct.Struct("<QIIIiIB")
DIGEST = 32
_INDEX_LIMIT = 64 << 20


def pack_file(pack_id: str) -> str:
    return pack_id + SUFFIX


@dataclass(frozen=True)
class Frame:
    offset: int
    length: int
    first_slot: int
    pages: int
    base: tuple[str, int] | None
    depth: int


@dataclass(frozen=True)
class PackIndex:
    """Where a pack's frames are, which page (SHA-256) each slot holds, which packs it needs."""

    pack_id: str
    page_size: int
    frames: tuple[Frame, ...]
    digests: tuple[bytes, ...]

    @property
    def bases(self) -> frozenset[str]:
        return frozenset(f.base[0] for f in self.frames if f.base and f.base[0] != self.pack_id)

    def frame_of(self, slot: int) -> Frame:
        lo, hi = 0, len(self.frames) - 1
        while lo < hi:  # frames are in slot order: the last one starting at or before slot
            mid = (lo + hi + 1) // 2
            if self.frames[mid].first_slot <= slot:
                lo = mid
            else:
                hi = mid - 1
        return self.frames[lo]


def encode_index(page_size: int, frames: list[Frame], digests: list[bytes]) -> bytes:
    bases = sorted({f.base[0] for f in frames if f.base})
    number = {b: i for i, b in enumerate(bases)}
    head = HEAD.pack(INDEX_MAGIC, page_size, len(digests), len(frames), len(bases))
    table = b"".join(
        FRAME.pack(
            f.offset,
            f.length,
            f.first_slot,
            f.pages,
            number[f.base[0]] if f.base else -1,
            f.base[1] if f.base else 0,
            f.depth,
        )
        for f in frames
    )
    raw = head + b"".join(bytes.fromhex(b) for b in bases) + table + b"".join(digests)
    return zstd.compress(raw, level=LEVEL)


def decompress(
    data: bytes, pack_id: str, what: str, *, limit: int, prefix: bytes | None = None
) -> bytes:
    """One complete zstd frame's content, at most ``limit`` bytes; PackFormatError otherwise."""
    try:
        zdict = zstd.ZstdDict(prefix, is_raw=True).as_prefix if prefix is not None else None
        d = zstd.ZstdDecompressor(zstd_dict=zdict)
        out = d.decompress(data, max_length=limit + 1)
        if len(out) > limit:
            raise PackFormatError(pack_id, f"{what}: expands past {limit} bytes")
        if not d.eof or d.unused_data:
            raise PackFormatError(pack_id, f"{what}: not exactly one complete zstd frame")
    except zstd.ZstdError as exc:
        raise PackFormatError(pack_id, f"{what}: {exc}") from exc
    return out


def read_index(packs_fd: int, pack_id: str, *, where: Path) -> PackIndex:
    """The index of a published pack; PackFormatError naming the pack if it is damaged."""
    fd = open_file(packs_fd, pack_file(pack_id), os.O_RDONLY, where=where / pack_file(pack_id))
    try:
        size = os.fstat(fd).st_size
        if size < FOOTER.size:
            raise PackFormatError(pack_id, f"{size} bytes, shorter than its footer")
        offset, length, magic = FOOTER.unpack(os.pread(fd, FOOTER.size, size - FOOTER.size))
        if magic != FOOTER_MAGIC or offset + length + FOOTER.size != size:
            raise PackFormatError(pack_id, "bad footer")
        raw = decompress(os.pread(fd, length, offset), pack_id, "index", limit=_INDEX_LIMIT)
    finally:
        os.close(fd)
    return _parse_index(pack_id, raw, data_end=offset)


def _parse_index(pack_id: str, raw: bytes, *, data_end: int) -> PackIndex:
    if len(raw) < HEAD.size:
        raise PackFormatError(pack_id, "index too short")
    magic, page_size, n_slots, n_frames, n_bases = HEAD.unpack_from(raw)
    if magic != INDEX_MAGIC or not 512 <= page_size <= 65536:
        raise PackFormatError(pack_id, "bad index header")
    at = HEAD.size + 16 * n_bases
    if len(raw) != at + n_frames * FRAME.size + n_slots * DIGEST:
        raise PackFormatError(pack_id, "index length does not match its counts")
    bases = [raw[HEAD.size + 16 * i : HEAD.size + 16 * (i + 1)].hex() for i in range(n_bases)]
    frames: list[Frame] = []
    next_slot = 0
    for i in range(n_frames):
        off, length, first, pages, base_no, base_slot, depth = FRAME.unpack_from(
            raw, at + i * FRAME.size
        )
        delta = base_no >= 0
        if (
            first != next_slot
            or pages < 1
            or off + length > data_end
            or base_no >= n_bases
            or (delta and (pages != 1 or not 1 <= depth <= MAX_DEPTH))
            or (not delta and (pages > FRAME_PAGES or depth != 0))
        ):
            raise PackFormatError(pack_id, f"frame {i} of the index is inconsistent")
        base = (bases[base_no], base_slot) if delta else None
        frames.append(Frame(off, length, first, pages, base, depth))
        next_slot += pages
    if next_slot != n_slots or (n_slots and not frames):
        raise PackFormatError(pack_id, f"frames hold {next_slot} slots, not {n_slots}")
    start = at + n_frames * FRAME.size
    digests = tuple(raw[i : i + DIGEST] for i in range(start, len(raw), DIGEST))
    return PackIndex(pack_id, page_size, tuple(frames), digests)
