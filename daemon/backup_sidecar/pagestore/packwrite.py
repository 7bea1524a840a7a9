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
    """Writes one pack to a temporary file; ``finish`` publishes it under its final name."""

    def __init__(self, dirs: fsio.StoreDirs, *, page_size: int, level: int = LEVEL) -> None:
        self.pack_id = new_pack_id()
        self._dirs = dirs
        self._page_size = page_size
        self._level = level
        self._tmp, self._fd = fsio.create_temp(dirs.packs_fd, where=dirs.packs)
        self._pending: list[bytes] = []
        self._frames: list[Frame] = []
        self._digests: list[bytes] = []
        self._offset = 0
        self._buf = bytearray()

    @property
    def slots(self) -> int:
        return len(self._digests)

    @property
    def full(self) -> bool:
        return self.slots >= PACK_PAGES

    def add(self, page: bytes, digest: bytes) -> int:
        """Append a whole page (compressed with its neighbours); returns its slot."""
        self._digests.append(digest)
        self._pending.append(page)
        if len(self._pending) == FRAME_PAGES:
            self._flush()
        return len(self._digests) - 1

    def add_delta(
        self, page: bytes, digest: bytes, *, base: tuple[str, int], base_page: bytes, depth: int
    ) -> int:
        """Append a page compressed against ``base_page`` (slot ``base``, of ``depth`` - 1);
        returns its slot."""
        self._flush()
        prefix = zstd.ZstdDict(base_page, is_raw=True).as_prefix
        frame = zstd.compress(page, level=self._level, zstd_dict=prefix)
        self._append(frame, pages=1, base=base, depth=depth)
        self._digests.append(digest)
        return len(self._digests) - 1

    def _flush(self) -> None:
        if not self._pending:
            return
        frame = zstd.compress(b"".join(self._pending), level=self._level)
        self._append(frame, pages=len(self._pending), base=None, depth=0)
        self._pending = []

    def _append(
        self, frame: bytes, *, pages: int, base: tuple[str, int] | None, depth: int
    ) -> None:
        self._buf += frame
        if len(self._buf) >= _WRITE_BYTES:
            fsio.write_all(self._fd, bytes(self._buf))
            self._buf.clear()
        first = len(self._digests) - (len(self._pending) if base is None else 0)
        self._frames.append(Frame(self._offset, len(frame), first, pages, base, depth))
        self._offset += len(frame)

    def finish(self) -> int:
        """Write index and footer, fsync, rename into place; returns the pack's size."""
        self._flush()
        index = encode_index(self._page_size, self._frames, self._digests)
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
