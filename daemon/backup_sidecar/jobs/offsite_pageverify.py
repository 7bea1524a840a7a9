"""`verify --offsite NAME` of an incremental backup: its manifests and the packs they need
downloaded into a temporary directory (never the backup directory), decrypted, rebuilt and
checked (every page against its SHA-256, each image against its manifest's), then
``integrity_check`` of each rebuilt image (jobs/offsite_verify.py reports it)."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backup_sidecar import offsite, pagestore
from backup_sidecar.errors import CorruptArchiveError
from backup_sidecar.jobs.offsite_pagefetch import complete_manifests, stage_checked
from backup_sidecar.offsite.pagekeys import list_pages

_TEMP_PREFIX = "backup-sidecar-offsite-verify-"


@dataclass(frozen=True)
class PageCopyFound:
    """An incremental backup offsite: its policy (its record's), each database's manifest."""

    name: str
    policy: str
    manifests: dict[str, offsite.OffsiteObject]

    @property
    def object(self) -> str:
        return next(iter(self.manifests.values())).name

    @property
    def encrypted(self) -> bool:
        return any(o.encrypted for o in self.manifests.values())


def find_page_copy(store: offsite.Store, name: str, *, encrypted_only: bool) -> PageCopyFound:
    """The offsite incremental backup ``name`` (OffsiteObjectNotFoundError when none)."""
    objects = list_pages(store, encrypted_only=encrypted_only).objects
    manifests = complete_manifests(store, objects, name, encrypted_only=encrypted_only)
    first = next(iter(manifests.values()))
    origin = first.record.origin if first.record is not None else None
    return PageCopyFound(name, origin.policy if origin is not None else "manual", manifests)


def check_page_copy(
    store: offsite.Store,
    found: PageCopyFound,
    *,
    identity_file: Path | None,
    encrypted_only: bool,
    temp_root: Path | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> tuple[str, ...]:
    """Download, rebuild and check ``found`` completely; the databases it holds. Raises the
    download's errors, OffsiteObjectCorruptError or CorruptArchiveError naming the object."""
    loaded: tuple[Any, ...] = ()
    if identity_file is not None and found.encrypted:
        loaded = tuple(offsite.load_identities(identity_file))
    source = str(identity_file) if identity_file is not None else "(none needed)"
    with tempfile.TemporaryDirectory(prefix=_TEMP_PREFIX, dir=temp_root) as tmp:
        staged, _, _ = stage_checked(
            store,
            found.manifests,
            Path(tmp),
            backup_dir=None,
            keys=lambda _: (loaded, source),
            encrypted_only=encrypted_only,
            should_stop=should_stop,
        )
        for db, root in staged.items():
            image = Path(tmp) / f"{db}.checked"
            pagestore.rebuild(root, found.name, out=image)
            _integrity(image, db, found.manifests[db].name)
            image.unlink()
    return tuple(found.manifests)


def _integrity(image: Path, db: str, object_name: str) -> None:
    conn = sqlite3.connect(f"file:{image}?mode=ro", uri=True)
    try:
        verdict = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()
    if verdict != ["ok"]:
        raise CorruptArchiveError(object_name, f"{db}: integrity_check: {'; '.join(verdict[:3])}")
