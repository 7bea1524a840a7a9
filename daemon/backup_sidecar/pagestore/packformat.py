"""The pack file format: immutable files of zstd-compressed pages, each slot named by SHA-256.

A pack is written once, in order, and read by slot::

    frame 0 | frame 1 | ... | index | footer
    frame:  one zstd frame of up to FRAME_PAGES pages, compressed together (a 4 KiB page alone
            compresses far worse): whole pages, or deltas: pages compressed with their bases
            (each slot's base is the same page of the parent backup, another slot), joined
            in slot order, as a zstd prefix; a changed page mostly repeats its old version
    index:  one zstd frame: head (magic, page size, slot count, frame count, base count), the
            base packs (16 bytes each), per frame (offset, length, first slot, pages, kind,
            depth), per slot its SHA-256 and its base (pack number or -1, slot)
    footer: index offset u64, index length u32, b"SCPAGES3"

A delta frame's depth is its bases' greatest depth + 1 (whole pages: 0). Readers accept up to
MAX_DEPTH; this version's writer builds deltas on whole pages only (depth 1, see placing.py).
A pack's base packs must be kept with it: the GC marks them (``bases``) as it marks the packs
the manifests name.
"""

from __future__ import annotations

import bisect
import functools
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
FOOTER_MAGIC = b"SCPAGES3"
HEAD = struct.Struct("<4sIIII")
INDEX_MAGIC = b"PIDX"
FRAME = struct.Struct("<QIIIBB")
SLOT = struct.Struct("<32siI")
_INDEX_LIMIT = 64 << 20


def pack_file(pack_id: str) -> str:
    return pack_id + SUFFIX


@dataclass(frozen=True)
class Frame:
    offset: int
    length: int
    first_slot: int
    pages: int
    delta: bool
    depth: int


@dataclass(frozen=True)
class PackIndex:
    """Where a pack's frames are, which page (SHA-256) each slot holds, which packs it needs."""

    pack_id: str
    page_size: int
    frames: tuple[Frame, ...]
    digests: tuple[bytes, ...]
    slot_bases: tuple[tuple[str, int] | None, ...]

    @property
    def bases(self) -> frozenset[str]:
        return frozenset(b[0] for b in self.slot_bases if b and b[0] != self.pack_id)

    @functools.cached_property
    def _firsts(self) -> list[int]:
        return [f.first_slot for f in self.frames]

    def frame_of(self, slot: int) -> Frame:
        # frames are in slot order: the last one starting at or before slot
        return self.frames[max(bisect.bisect_right(self._firsts, slot) - 1, 0)]


def encode_index(
    page_size: int, frames: list[Frame], digests: list[bytes], bases: list[tuple[str, int] | None]
) -> bytes:
    packs = sorted({b[0] for b in bases if b})
    number = {p: i for i, p in enumerate(packs)}
    head = HEAD.pack(INDEX_MAGIC, page_size, len(digests), len(frames), len(packs))
    table = b"".join(
        FRAME.pack(f.offset, f.length, f.first_slot, f.pages, int(f.delta), f.depth) for f in frames
    )
    slots = b"".join(
        SLOT.pack(d, number[b[0]] if b else -1, b[1] if b else 0)
        for d, b in zip(digests, bases, strict=True)
    )
    raw = head + b"".join(bytes.fromhex(p) for p in packs) + table + slots
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
    if len(raw) != at + n_frames * FRAME.size + n_slots * SLOT.size:
        raise PackFormatError(pack_id, "index length does not match its counts")
    packs = [raw[HEAD.size + 16 * i : HEAD.size + 16 * (i + 1)].hex() for i in range(n_bases)]
    digests: list[bytes] = []
    bases: list[tuple[str, int] | None] = []
    for d, number, slot in SLOT.iter_unpack(raw[at + n_frames * FRAME.size :]):
        if not -1 <= number < n_bases:
            raise PackFormatError(pack_id, f"slot {len(digests)} names no base pack")
        digests.append(d)
        bases.append((packs[number], slot) if number >= 0 else None)
    frames = _parse_frames(pack_id, raw[at : at + n_frames * FRAME.size], bases, data_end)
    return PackIndex(pack_id, page_size, frames, tuple(digests), tuple(bases))


def _parse_frames(
    pack_id: str, raw: bytes, bases: list[tuple[str, int] | None], data_end: int
) -> tuple[Frame, ...]:
    frames: list[Frame] = []
    next_slot = 0
    for i, (off, length, first, pages, kind, depth) in enumerate(FRAME.iter_unpack(raw)):
        slots = bases[first : first + pages]
        delta = kind == 1
        if (
            first != next_slot
            or not 1 <= pages <= FRAME_PAGES
            or len(slots) != pages
            or off + length > data_end
            or kind > 1
            or (delta and (not 1 <= depth <= MAX_DEPTH or None in slots))
            or (not delta and (depth != 0 or any(slots)))
        ):
            raise PackFormatError(pack_id, f"frame {i} of the index is inconsistent")
        frames.append(Frame(off, length, first, pages, delta, depth))
        next_slot += pages
    if next_slot != len(bases):
        raise PackFormatError(pack_id, f"frames hold {next_slot} slots, not {len(bases)}")
    return tuple(frames)
