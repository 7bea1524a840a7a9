"""One page-level backup: read every page in one read transaction, store only new pages.

Each page is hashed (SHA-256); a page whose hash is already in a pack (from any earlier
backup, or earlier in this one) costs nothing, a new one goes into a new pack. The packs are
published first, the manifest last: a crash before the manifest leaves only packs that no
manifest names (swept by the next GC), never a manifest naming a missing pack. The whole
backup holds the store's exclusive lock, so a GC cannot sweep its packs before the manifest
lands.

Why SHA-256 and not a fast hash (xxh3) for the page address: the pages hold the application's
data, which its users can shape, and a non-cryptographic hash lets a crafted page collide with
another so that a backup silently stores the wrong page. SHA-256 costs ~1.1 s of CPU per GiB
read on this project's machines (docs/pagestore.md), next to the image's own SHA-256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from backup_sidecar.archiver.safefs import is_present
from backup_sidecar.errors import PackFormatError, PageBackupExistsError
from backup_sidecar.pagestore import fsio, packs
from backup_sidecar.pagestore.manifest import Manifest, check_name, manifest_file, runs_of
from backup_sidecar.pagestore.reader import ImageInfo, read_pages

LOCK_TIMEOUT_S = 30.0


def create_backup(
    db: Path,
    *,
    store: Path,
    name: str,
    now: datetime,
    metadata: Mapping[str, Any] | None = None,
    level: int = packs.LEVEL,
    busy_timeout_s: float = 30.0,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
) -> Manifest:
    """Back up the live database ``db`` into the page store at ``store`` as ``name``."""
    check_name(name)
    with fsio.open_store(store, exclusive=True, timeout_s=lock_timeout_s) as dirs:
        if is_present(dirs.manifests_fd, manifest_file(name)):
            raise PageBackupExistsError(name)
        known = known_pages(dirs)
        with read_pages(db, busy_timeout_s=busy_timeout_s) as (info, pages):
            image_sha, locations, written = _store_pages(dirs, info, pages, known, level)
        stats = {
            "pages_read": info.page_count,
            "pages_new": sum(n for _, n, _ in written),
            "packs_written": len(written),
            "bytes_stored": sum(size for _, _, size in written),
        }
        manifest = Manifest(
            name=name,
            created_at=now.isoformat(),
            page_size=info.page_size,
            page_count=info.page_count,
            image_sha256=image_sha,
            header=info.header,
            runs=runs_of(locations),
            stats=stats,
            metadata=dict(metadata or {}),
        )
        if is_present(dirs.manifests_fd, manifest_file(name)):
            raise PageBackupExistsError(name)
        # A rename, not link + unlink: a kill between those two would leave the manifest with
        # two links, which the no-follow reader refuses. The exclusive lock makes the
        # presence check above and the rename one step for every writer of this store.
        fsio.write_file(
            dirs.manifests_fd,
            manifest_file(name),
            manifest.to_bytes(),
            where=dirs.manifests,
            replace=True,
        )
        return manifest


def known_pages(dirs: fsio.StoreDirs) -> dict[bytes, tuple[str, int]]:
    """SHA-256 -> (pack, slot) of every page in every readable pack of the store.

    A damaged pack is left out: a new backup stores its pages again rather than name them.
    """
    known: dict[bytes, tuple[str, int]] = {}
    for file in fsio.listdir(dirs.packs_fd, packs.SUFFIX):
        pack_id = file.removesuffix(packs.SUFFIX)
        try:
            idx = packs.read_index(dirs.packs_fd, pack_id, where=dirs.packs)
        except (PackFormatError, OSError):
            continue
        for slot, digest in enumerate(idx.digests):
            known.setdefault(digest, (pack_id, slot))
    return known


def _store_pages(
    dirs: fsio.StoreDirs,
    info: ImageInfo,
    pages: Iterator[bytes],
    known: dict[bytes, tuple[str, int]],
    level: int,
) -> tuple[str, list[tuple[str, int]], list[tuple[str, int, int]]]:
    """Hash and place every page; returns the image SHA-256, each page's (pack, slot) and the
    packs written as (id, pages, bytes)."""
    image = hashlib.sha256()
    locations: list[tuple[str, int]] = []
    written: list[tuple[str, int, int]] = []
    writer: packs.PackWriter | None = None
    try:
        for page in pages:
            image.update(page)
            digest = hashlib.sha256(page).digest()
            where = known.get(digest)
            if where is None:
                if writer is None:
                    writer = packs.PackWriter(dirs, page_size=info.page_size, level=level)
                where = (writer.pack_id, writer.add(page, digest))
                known[digest] = where
                if writer.full:
                    written.append((writer.pack_id, writer.slots, writer.finish()))
                    writer = None
            locations.append(where)
        if writer is not None:
            written.append((writer.pack_id, writer.slots, writer.finish()))
            writer = None
    finally:
        if writer is not None:
            writer.abort()
    return image.hexdigest(), locations, written
