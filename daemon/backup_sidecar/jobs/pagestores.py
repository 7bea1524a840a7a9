"""Where the page stores are and what they hold: ``<backup_dir>/pages/<database>/``.

Each database has its own page store (its chains, packs and manifests: pagestore/). One
incremental backup of a policy is one manifest of the same name in the store of every database
it covers, so a restore point spans databases as an archive does. The directories are made and
opened without following a link (the backup directory is shared ground): a planted link is an
UnsafeEntryError naming it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

import structlog

from backup_sidecar import pagestore
from backup_sidecar.archiver.safefs import backup_dir_fd, open_subdir
from backup_sidecar.errors import ManifestFormatError, PageBackupNotFoundError
from backup_sidecar.pagestore import fsio
from backup_sidecar.pagestore.manifest import manifest_file
from backup_sidecar.pagestore.rebuild import load_manifest

#: The page stores' directory in the backup directory.
PAGES_DIR = "pages"
#: The time `list` gives a backup whose every manifest is unreadable.
_UNKNOWN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
log = structlog.get_logger(__name__)


def pages_root(backup_dir: Path) -> Path:
    return backup_dir / PAGES_DIR


def store_path(backup_dir: Path, db: str, *, create: bool) -> Path | None:
    """The page store of database ``db`` (made with ``create``; None if absent), its two
    directories opened without following a link on the way."""
    root = pages_root(backup_dir)
    with backup_dir_fd(backup_dir) as top:
        try:
            pages = open_subdir(top, PAGES_DIR, where=root, create=create)
        except FileNotFoundError:
            return None
        try:
            os.close(open_subdir(pages, db, where=root / db, create=create))
        except FileNotFoundError:
            return None
        finally:
            os.close(pages)
    return root / db


def store_names(backup_dir: Path) -> list[str]:
    """The databases that have a page store (any name, configured now or not)."""
    with backup_dir_fd(backup_dir) as top:
        try:
            pages = open_subdir(top, PAGES_DIR, where=pages_root(backup_dir))
        except FileNotFoundError:
            return []
        try:
            names = os.listdir(pages)  # noqa: PTH208 - a descriptor, not a path
        finally:
            os.close(pages)
    return sorted(n for n in names if not n.startswith("."))


def page_name_taken(backup_dir: Path, name: str) -> str | None:
    """``an incremental backup`` when a page store holds anything as ``name``'s manifest (an
    incomplete backup's too): an archive never takes that name (staging.reserve_name)."""
    try:
        file = manifest_file(name)
    except ValueError:  # no page store can hold it
        return None
    for db in store_names(backup_dir):
        if os.path.lexists(pages_root(backup_dir) / db / "manifests" / file):
            return "an incremental backup"
    return None


M = TypeVar("M", pagestore.Manifest, pagestore.Brief)


@dataclass(frozen=True)
class _Backup(Generic[M]):
    """One incremental backup: its manifest (or its brief) in the store of each database it
    covers."""

    name: str
    policy: str
    sequence: int | None
    created_at: datetime
    manifests: Mapping[str, M]
    #: db -> why that store's manifest of this name cannot be read.
    errors: Mapping[str, str] = field(default_factory=dict)

    @property
    def databases(self) -> tuple[str, ...]:
        return tuple(self.manifests)

    @property
    def newness(self) -> tuple[int, datetime, str]:
        return (self.sequence or 0, self.created_at, self.name)

    @property
    def bytes_stored(self) -> int:
        return sum(m.stats.get("bytes_stored", 0) for m in self.manifests.values())


class PageBackup(_Backup[pagestore.Manifest]):
    """An incremental backup with its manifests parsed in full (runs included)."""


class BriefBackup(_Backup[pagestore.Brief]):
    """An incremental backup from the stores' cached briefs (pagestore/briefs.py): a listing."""


def misplaced(db: str, metadata: Mapping[str, Any]) -> str | None:
    """Why a manifest found in the store of ``db`` is not ``db``'s (its metadata names another
    database: moved or swapped with that database's); None when it is, or says nothing."""
    named = metadata.get("database")
    if named is None or named == db:
        return None
    return f"manifest of database {named!r} in the page store of {db!r} (moved or swapped)"


def cache_problem(problem: str) -> None:
    """A page store's brief cache ignored or not written: the listing reads the manifests."""
    log.warning("page_store_cache_problem", problem=problem)


def list_page_backups(backup_dir: Path) -> tuple[list[PageBackup], list[str]]:
    """Every incremental backup, newest first (by creation sequence), and one problem line per
    manifest that cannot be read (never an exception for the whole listing). Parses every
    manifest in full: for a listing, ``list_page_briefs``."""
    found, broken, problems = _collect(backup_dir, pagestore.list_backups)
    names = {*found, *broken}
    backups = [_backup(PageBackup, n, found.get(n, {}), broken.get(n, {})) for n in names]
    return sorted(backups, key=lambda b: b.newness, reverse=True), problems


def list_page_briefs(backup_dir: Path) -> tuple[list[BriefBackup], list[str]]:
    """``list_page_backups`` from the cached briefs: the same backups, errors and order."""

    def briefs(store: Path) -> list[pagestore.Brief | ManifestFormatError]:
        return pagestore.list_briefs(store, on_problem=cache_problem)

    found, broken, problems = _collect(backup_dir, briefs)
    names = {*found, *broken}
    backups = [_backup(BriefBackup, n, found.get(n, {}), broken.get(n, {})) for n in names]
    return sorted(backups, key=lambda b: b.newness, reverse=True), problems


def _collect(
    backup_dir: Path, lister: Callable[[Path], Sequence[M | ManifestFormatError]]
) -> tuple[dict[str, dict[str, M]], dict[str, dict[str, str]], list[str]]:
    found: dict[str, dict[str, M]] = {}
    broken: dict[str, dict[str, str]] = {}
    problems: list[str] = []
    for db in store_names(backup_dir):
        try:
            store = store_path(backup_dir, db, create=False)
            entries = lister(store) if store else []
        except (OSError, ValueError) as exc:  # a planted link, an unreadable store
            problems.append(f"page store {db!r}: {exc}")
            continue
        for entry in entries:
            why = str(entry) if isinstance(entry, ManifestFormatError) else None
            if not isinstance(entry, ManifestFormatError):
                why = misplaced(db, entry.metadata)
                if why is None:
                    found.setdefault(entry.name, {})[db] = entry
            if why is not None:
                broken.setdefault(entry.name, {})[db] = why
    return found, broken, problems


B = TypeVar("B", PageBackup, BriefBackup)


def _backup(kind: type[B], name: str, manifests: Mapping[str, Any], errors: dict[str, str]) -> B:
    first = next(iter(manifests.values()), None)
    meta = first.metadata if first else {}
    sequence = meta.get("sequence")
    expected = meta.get("backup_databases")
    for db in expected if isinstance(expected, list) else ():
        if isinstance(db, str) and db not in manifests and db not in errors:
            # A kill between two databases' manifests (the job removes them on any error).
            errors = {**errors, db: "no manifest: the backup never completed for it"}
    return kind(
        name=name,
        policy=str(meta.get("policy", "")),
        sequence=sequence if type(sequence) is int else None,
        created_at=datetime.fromisoformat(first.created_at) if first else _UNKNOWN_TIME,
        manifests=dict(sorted(manifests.items())),
        errors=errors,
    )


def find_page_backup(backup_dir: Path, name: str) -> PageBackup | None:
    """The incremental backup ``name``, or None: only the manifests of that name are read
    (one per store), never the other backups'."""
    try:
        manifest_file(name)
    except ValueError:
        return None
    found: dict[str, pagestore.Manifest] = {}
    broken: dict[str, str] = {}
    for db in store_names(backup_dir):
        try:
            store = store_path(backup_dir, db, create=False)
            if store is None:
                continue
            with fsio.open_store(store, exclusive=False, timeout_s=fsio.LOCK_TIMEOUT_S) as dirs:
                m = load_manifest(dirs, name)
            why = misplaced(db, m.metadata)
            if why is not None:
                broken[db] = why
            else:
                found[db] = m
        except PageBackupNotFoundError:
            continue
        except ManifestFormatError as exc:
            broken[db] = str(exc)
        except (OSError, ValueError):  # an unreadable store: as the listing, not this backup's
            continue
    if not found and not broken:
        return None
    return _backup(PageBackup, name, found, broken)
