"""Reading pages back by (pack, slot): frames of whole pages and frames of deltas.

A delta frame is decoded over its slots' base pages, each read the same way, at most
MAX_DEPTH deep (a wrong base shows as a wrong page: the caller checks every page's SHA-256).
Decoded frames are kept in a small LRU cache, so a rebuild in page order decompresses each
frame about once.
"""

from __future__ import annotations

import os
from collections import OrderedDict

from backup_sidecar.archiver.safefs import open_file
from backup_sidecar.errors import PackFormatError
from backup_sidecar.pagestore import fsio
from backup_sidecar.pagestore.packformat import (
    MAX_DEPTH,
    Frame,
    PackIndex,
    decompress,
    pack_file,
    read_index,
)


class PackReader:
    """Pages by (pack, slot), through a small cache of decompressed frames; ``close`` it."""

    def __init__(self, dirs: fsio.StoreDirs, *, cache_frames: int = 256) -> None:
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
        """The page in ``slot`` and the SHA-256 the index records for it (not yet compared)."""
        return self._page(pack_id, slot, MAX_DEPTH + 1)

    def frame_at(self, pack_id: str, slot: int) -> tuple[bytes, Frame]:
        """The decoded frame holding ``slot`` (all its pages, checked for length only)."""
        idx = self.index(pack_id)
        if not 0 <= slot < len(idx.digests):
            raise PackFormatError(pack_id, f"no slot {slot} (it has {len(idx.digests)})")
        frame = idx.frame_of(slot)
        data = self._decoded(idx, frame, MAX_DEPTH + 1)
        if len(data) != frame.pages * idx.page_size:
            raise PackFormatError(pack_id, f"the frame of slot {slot} is short")
        return data, frame

    def depth(self, pack_id: str, slot: int) -> int:
        """How many deltas lie under the page in ``slot`` (0: a whole page)."""
        return self.index(pack_id).frame_of(slot).depth

    def _page(self, pack_id: str, slot: int, budget: int) -> tuple[bytes, bytes]:
        idx = self.index(pack_id)
        if not 0 <= slot < len(idx.digests):
            raise PackFormatError(pack_id, f"no slot {slot} (it has {len(idx.digests)})")
        frame = idx.frame_of(slot)
        data = self._decoded(idx, frame, budget)
        pos = slot - frame.first_slot
        page = data[pos * idx.page_size : (pos + 1) * idx.page_size]
        if len(page) != idx.page_size:
            raise PackFormatError(pack_id, f"the frame of slot {slot} is short")
        return page, idx.digests[slot]

    def _decoded(self, idx: PackIndex, frame: Frame, budget: int) -> bytes:
        key = (idx.pack_id, frame.first_slot)
        if key in self._frames:
            self._frames.move_to_end(key)
            return self._frames[key]
        prefix = None
        if frame.delta:
            if budget <= 1:
                raise PackFormatError(idx.pack_id, f"slot {frame.first_slot}: deltas too deep")
            bases = idx.slot_bases[frame.first_slot : frame.first_slot + frame.pages]
            prefix = b"".join(self._base(idx, b, budget - 1) for b in bases if b)
        raw = os.pread(self._fd(idx.pack_id), frame.length, frame.offset)
        what = f"the frame of slot {frame.first_slot}"
        data = decompress(raw, idx.pack_id, what, limit=frame.pages * idx.page_size, prefix=prefix)
        self._frames[key] = data
        if len(self._frames) > self._cache:
            self._frames.popitem(last=False)
        return data

    def _base(self, idx: PackIndex, base: tuple[str, int], budget: int) -> bytes:
        try:
            return self._page(base[0], base[1], budget)[0]
        except FileNotFoundError:
            raise PackFormatError(idx.pack_id, f"its base pack {base[0]} is missing") from None

    def _fd(self, pack_id: str) -> int:
        fd = self._fds.get(pack_id)
        if fd is None:
            name = pack_file(pack_id)
            fd = open_file(self._dirs.packs_fd, name, os.O_RDONLY, where=self._dirs.packs / name)
            self._fds[pack_id] = fd
        return fd
