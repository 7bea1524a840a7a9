"""Where each page of a backup goes: an existing slot, a delta of its parent, or a new page.

A page whose SHA-256 is already stored (by any backup, or earlier in this one) is named, not
stored. A new page whose parent backup holds a page at the same number is stored as a zstd
delta over the whole version of that page (the parent's page, or the page it is a delta of: a
changed page mostly repeats its old version) unless that page cannot be read and checked;
every other new page is stored whole, 64 to a frame. Deltas and whole pages go to separate
packs, each published when full or at ``finish``; after a failure nothing unfinished is
published.
"""

from __future__ import annotations

import hashlib
from types import TracebackType

from backup_sidecar.errors import PackFormatError
from backup_sidecar.pagestore import fsio
from backup_sidecar.pagestore.damage import damaged_packs
from backup_sidecar.pagestore.manifest import Manifest
from backup_sidecar.pagestore.packread import PackReader
from backup_sidecar.pagestore.packwrite import PackWriter

_WHOLE, _DELTA = "whole", "delta"


class Placer:
    """Places the pages of one backup, in page order; use as a context manager."""

    def __init__(
        self,
        dirs: fsio.StoreDirs,
        *,
        page_size: int,
        known: dict[bytes, tuple[str, int]],
        parent: Manifest | None,
        level: int,
    ) -> None:
        self._dirs = dirs
        self._page_size = page_size
        self._known = known
        self._level = level
        same_size = parent is not None and parent.page_size == page_size
        self._parent = [(p, s) for _, p, s in parent.locations()] if parent and same_size else []
        self._reader = PackReader(dirs)
        self._damaged = damaged_packs(dirs)
        self._writers: dict[str, PackWriter] = {}
        self._sizes: list[int] = []
        self.pages_new = 0
        self.pages_delta = 0

    def __enter__(self) -> Placer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._reader.close()
        for writer in self._writers.values():
            writer.abort()
        self._writers.clear()

    def place(self, pgno: int, page: bytes, *, digest: bytes | None = None) -> tuple[str, int]:
        """The (pack, slot) that holds ``page`` (whose SHA-256 is ``digest``) from now on."""
        digest = digest or hashlib.sha256(page).digest()
        where = self._known.get(digest)
        if where is not None:
            return where
        self.pages_new += 1
        delta = self._delta_base(pgno)
        if delta is None:
            writer = self._writer(_WHOLE)
            slot = writer.add(page, digest)
        else:
            base, base_page, depth = delta
            writer = self._writer(_DELTA)
            slot = writer.add_delta(page, digest, base=base, base_page=base_page, depth=depth)
            self.pages_delta += 1
        where = (writer.pack_id, slot)
        self._known[digest] = where
        if writer.full:
            self._sizes.append(self._writers.pop(_DELTA if delta else _WHOLE).finish())
        return where

    def finish(self) -> list[int]:
        """Publish the packs still open; the sizes of every pack this backup wrote."""
        for kind in sorted(self._writers):
            self._sizes.append(self._writers.pop(kind).finish())
        return list(self._sizes)

    def _writer(self, kind: str) -> PackWriter:
        if kind not in self._writers:
            self._writers[kind] = PackWriter(
                self._dirs, page_size=self._page_size, level=self._level
            )
        return self._writers[kind]

    def _delta_base(self, pgno: int) -> tuple[tuple[str, int], bytes, int] | None:
        """The whole page this page's delta is built on: the parent's page at ``pgno`` if it
        is whole, else that page's own base. Deltas are one level deep: a delta frame needs
        only whole frames to decode, so a rebuild never fans out through chains of frames
        (a frame of 64 deltas has up to 64 base frames; chained, that multiplies)."""
        if pgno > len(self._parent):
            return None
        base = self._parent[pgno - 1]
        try:
            keyframe = self._reader.index(base[0]).slot_bases[base[1]]
            if keyframe is not None:
                base = keyframe
            if base[0] in self._damaged or self._reader.depth(*base) != 0:
                return None
            page, digest = self._reader.page(*base)
        except (PackFormatError, OSError, IndexError):
            return None  # the parent's page is damaged or gone: store this one whole
        if hashlib.sha256(page).digest() != digest:
            return None
        return base, page, 1
