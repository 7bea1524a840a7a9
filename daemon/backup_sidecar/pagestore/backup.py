"""One page-level backup: read every page in one read transaction, store only new pages.

Each page is hashed (SHA-256); a page whose hash is already in a pack (from any earlier
backup, or earlier in this one) costs nothing, a new one goes into a new pack, as a delta of
the parent backup's page where there is one (``placing``). The packs are
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
from collections.abc import Mapping
from datetime import datetime
from itertools import repeat
from pathlib import Path
from typing import Any, cast

from backup_sidecar.archiver.safefs import is_present
from backup_sidecar.errors import PackFormatError, PageBackupExistsError, PageReadError
from backup_sidecar.pagestore import fsio
from backup_sidecar.pagestore.checking import reused_check
from backup_sidecar.pagestore.damage import damaged_packs
from backup_sidecar.pagestore.fsio import LOCK_TIMEOUT_S
from backup_sidecar.pagestore.manifest import Manifest, check_name, manifest_file, runs_of
from backup_sidecar.pagestore.packformat import LEVEL, SUFFIX, read_index
from backup_sidecar.pagestore.placing import Placer
from backup_sidecar.pagestore.readproc import snapshot_in_child
from backup_sidecar.pagestore.rebuild import load_manifest
from backup_sidecar.pagestore.snapshot import snapshot


def create_backup(
    db: Path,
    *,
    store: Path,
    name: str,
    now: datetime,
    parent: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    level: int = LEVEL,
    busy_timeout_s: float = 30.0,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
    read_in_child: bool = False,
    check: str | None = None,
    reuse_check: bool = True,
) -> Manifest:
    """Back up the live database ``db`` into the page store at ``store`` as ``name``.

    With ``parent`` (the chain's previous backup, chosen by the caller: the store never orders
    backups by a clock), a changed page is stored as a delta of the parent's page. With
    ``read_in_child``, the pages are read by a child process (``readproc``): required where
    this process may also have ``db`` open through the stdlib ``sqlite3``. With ``check``
    (``quick`` or ``full``), the read transaction runs that check first and the manifest's
    metadata records it with the facts read there (``checking``); a failed check stores
    nothing. The read transaction first yields every page's SHA-256 and the image's; an
    image identical to the parent's (same SHA-256) whose check covers ``check`` takes the
    parent's check and facts instead of running it again (``checking.reused_check``, unless
    ``reuse_check`` is False: e.g. the parent is marked damaged), and only pages no pack holds
    are fetched from the reader.
    """
    check_name(name)
    with fsio.open_store(store, exclusive=True, timeout_s=lock_timeout_s) as dirs:
        if is_present(dirs.manifests_fd, manifest_file(name)):
            raise PageBackupExistsError(name)
        base = load_manifest(dirs, parent) if parent is not None else None
        known = known_pages(dirs)
        with (
            (snapshot_in_child if read_in_child else snapshot)(
                db, busy_timeout_s=busy_timeout_s
            ) as snap,
            Placer(
                dirs, page_size=snap.info.page_size, known=known, parent=base, level=level
            ) as placer,
        ):
            info = snap.info
            digests, image_sha256 = snap.digests()
            facts = None
            if check is not None:
                facts = (reuse_check and reused_check(base, image_sha256, check)) or snap.check(
                    check
                )
            # Every page's place in one C-level pass (None: no pack holds it yet); then only
            # the first page of each new SHA-256 is fetched and placed, in page order, and
            # the placer's additions to ``known`` name the rest.
            locations = list(map(known.get, digests))
            missing = [i for i, where in enumerate(locations) if where is None]
            new = _first_new(digests, missing)
            for pgno, page in zip(new, snap.pages(new) if new else (), strict=True):
                if hashlib.sha256(page).digest() != digests[pgno - 1]:
                    raise PageReadError(db, f"page {pgno} changed within its snapshot")
                placer.place(pgno, page, digest=digests[pgno - 1])
            for i in missing:
                locations[i] = known[digests[i]]
            written = placer.finish()
        stats = {
            "pages_read": info.page_count,
            "pages_new": placer.pages_new,
            "pages_delta": placer.pages_delta,
            "packs_written": len(written),
            "bytes_stored": sum(written),
        }
        manifest = Manifest(
            name=name,
            created_at=now.isoformat(),
            page_size=info.page_size,
            page_count=info.page_count,
            image_sha256=image_sha256,
            header=info.header,
            runs=runs_of(cast("list[tuple[str, int]]", locations)),
            stats=stats,
            metadata={
                **(metadata or {}),
                **(facts or {}),
                **({"parent": parent} if parent else {}),
            },
        )
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


def _first_new(digests: list[bytes], missing: list[int]) -> list[int]:
    """The page numbers to fetch: of the pages at ``missing`` (0-based, ascending: no pack
    holds their SHA-256), the first page of each SHA-256."""
    seen: set[bytes] = set()
    out = []
    for i in missing:
        if digests[i] not in seen:
            seen.add(digests[i])
            out.append(i + 1)
    return out


def known_pages(dirs: fsio.StoreDirs) -> dict[bytes, tuple[str, int]]:
    """SHA-256 -> (pack, slot) of every page in every readable pack of the store.

    A damaged pack (its index unreadable, or marked by a rebuild that found it damaged:
    ``damage``) is left out: a new backup stores its pages again rather than name them.
    """
    damaged = damaged_packs(dirs)
    indexes = []
    for file in fsio.listdir(dirs.packs_fd, SUFFIX):
        pack_id = file.removesuffix(SUFFIX)
        if pack_id in damaged:
            continue
        try:
            indexes.append(read_index(dirs.packs_fd, pack_id, where=dirs.packs))
        except (PackFormatError, OSError):
            continue
    # The first pack (by name) and the first slot holding a digest wins, as it always has:
    # later packs first, each slot range reversed, so the earliest entry is written last.
    known: dict[bytes, tuple[str, int]] = {}
    for idx in reversed(indexes):
        slots = zip(repeat(idx.pack_id), range(len(idx.digests) - 1, -1, -1), strict=False)
        known.update(zip(reversed(idx.digests), slots, strict=True))
    return known
