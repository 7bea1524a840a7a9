"""Writing one pack: whole pages in shared frames, changed pages as deltas of their base.

The pack grows in a temporary file of the store's ``packs/`` directory and appears under its
final name only by ``finish`` (index, footer, fsync, rename, fsync of the directory).
"""

from __future__ import annotations

import os
import secrets

from backup_sidecar.pagestore import fsio
from backup_sidecar.pagestore.packformat import (
    FOOTER,
    FOOTER_MAGIC,
    FRAME_PAGES,
    LEVEL,
    PACK_PAGES,
    Frame,
    encode_index,
    pack_file,
    zstd,
)

_WRITE_BYTES = 1 << 20


def new_pack_id() -> str:
    return secrets.token_hex(16)


class PackWriter:
    """Writes one pack to a temporary file; ``finish`` publishes it under its final name.

    Whole pages and deltas never share a frame: adding one kind after the other closes the
    open frame (a caller keeps one writer per kind to fill frames).
    """

    def __init__(self, dirs: fsio.StoreDirs, *, page_size: int, level: int = LEVEL) -> None:
        self.pack_id = new_pack_id()
        self._dirs = dirs
        self._page_size = page_size
        self._level = level
        self._tmp, self._fd = fsio.create_temp(dirs.packs_fd, where=dirs.packs)
        self._pending: list[bytes] = []
        self._prefix: list[bytes] = []
        self._depth = 0
        self._frames: list[Frame] = []
        self._digests: list[bytes] = []
        self._bases: list[tuple[str, int] | None] = []
        self._offset = 0
        self._buf = bytearray()

    @property
    def slots(self) -> int:
        return len(self._digests)

    @property
    def full(self) -> bool:
        return self.slots >= PACK_PAGES

    def add(self, page: bytes, digest: bytes) -> int:
        """Append a whole page; returns its slot."""
        if self._prefix:
            self._flush()
        return self._add(page, digest, None)

    def add_delta(
        self, page: bytes, digest: bytes, *, base: tuple[str, int], base_page: bytes, depth: int
    ) -> int:
        """Append a page to be compressed against ``base_page`` (slot ``base``; ``depth`` is
        the base's depth + 1); returns its slot."""
        if self._pending and not self._prefix:
            self._flush()
        self._prefix.append(base_page)
        self._depth = max(self._depth, depth)
        return self._add(page, digest, base)

    def _add(self, page: bytes, digest: bytes, base: tuple[str, int] | None) -> int:
        self._digests.append(digest)
        self._bases.append(base)
        self._pending.append(page)
        if len(self._pending) == FRAME_PAGES:
            self._flush()
        return len(self._digests) - 1

    def _flush(self) -> None:
        if not self._pending:
            return
        delta = bool(self._prefix)
        zdict = zstd.ZstdDict(b"".join(self._prefix), is_raw=True).as_prefix if delta else None
        frame = zstd.compress(b"".join(self._pending), level=self._level, zstd_dict=zdict)
        self._buf += frame
        if len(self._buf) >= _WRITE_BYTES:
            fsio.write_all(self._fd, bytes(self._buf))
            self._buf.clear()
        first = len(self._digests) - len(self._pending)
        depth = self._depth if delta else 0
        self._frames.append(
            Frame(self._offset, len(frame), first, len(self._pending), delta, depth)
        )
        self._offset += len(frame)
        self._pending, self._prefix, self._depth = [], [], 0

    def finish(self) -> int:
        """Write index and footer, fsync, rename into place; returns the pack's size."""
        self._flush()
        index = encode_index(self._page_size, self._frames, self._digests, self._bases)
        tail = index + FOOTER.pack(self._offset, len(index), FOOTER_MAGIC)
        fsio.write_all(self._fd, bytes(self._buf) + tail)
        self._buf.clear()
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        fsio.publish(self._dirs.packs_fd, self._tmp, pack_file(self.pack_id), replace=True)
        return self._offset + len(index) + FOOTER.size

    def abort(self) -> None:
        """Drop the temporary file (after a failure): nothing was published."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        fsio.discard(self._dirs.packs_fd, self._tmp)
