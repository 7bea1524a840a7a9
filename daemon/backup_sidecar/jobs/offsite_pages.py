"""The local side of page stores going offsite: which incremental backups there are, what each
needs offsite, and the checks of what is sent.

An incremental backup ``NAME`` is one manifest per database it covers
(``<backup_dir>/pages/<db>/manifests/NAME.json``); each needs the packs its pages are in and,
transitively, the packs holding the bases of their deltas (read from the local packs' indexes,
as the local garbage collection marks them). Offsite it is confirmed only when, for every one
of its databases, the manifest object is confirmed, made from this manifest file (its record's
source SHA-256), and every pack its record names is confirmed too (``offsite_state``).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from backup_sidecar import offsite
from backup_sidecar.archiver import ArchiveInfo, ArchiveStatus
from backup_sidecar.archiver.safefs import open_file
from backup_sidecar.errors import OperationAbortedError, PackFormatError, PageStoreError
from backup_sidecar.jobs.pagestores import store_names, store_path
from backup_sidecar.jobs.pagesummary import page_backups
from backup_sidecar.offsite.pagekeys import manifest_object, pack_object
from backup_sidecar.pagestore import fsio
from backup_sidecar.pagestore.fsio import LOCK_TIMEOUT_S
from backup_sidecar.pagestore.manifest import MAX_BYTES, Manifest, manifest_file, parse_manifest
from backup_sidecar.pagestore.packformat import pack_file, read_index
from backup_sidecar.pagestore.packread import PackReader
from backup_sidecar.pagestore.rebuild import load_manifest

_CHUNK = 1 << 20


@dataclass(frozen=True)
class LocalPageBackup:
    """One local incremental backup: its summary in each database's store (``infos``)."""

    name: str
    infos: Mapping[str, ArchiveInfo]

    @property
    def info(self) -> ArchiveInfo:
        """The backup as `list` shows it (its first database's summary)."""
        return next(iter(self.infos.values()))

    def store(self, backup_dir: Path, db: str) -> Path:
        return backup_dir / "pages" / db


def local_page_backups(backup_dir: Path) -> list[LocalPageBackup]:
    """Every incremental backup complete (a readable manifest in the store of each database it
    covers: pagesummary.page_backups) and not marked damaged, newest first (cached summaries:
    an unchanged store costs a listing and a stat per manifest)."""
    backups = [
        LocalPageBackup(name, dict(sorted(infos.items())))
        for name, infos in page_backups(backup_dir).items()
        if all(i.status is not ArchiveStatus.DAMAGED for i in infos.values())
    ]
    return sorted(backups, key=lambda b: b.info.newness, reverse=True)


@dataclass(frozen=True)
class PageUpload:
    """What one database's part of a backup sends: its manifest file, the packs it needs
    (closure), and the origin its manifest's record carries."""

    db: str
    store: Path
    manifest: Manifest
    packs: tuple[str, ...]
    origin: offsite.Origin

    @property
    def manifest_path(self) -> Path:
        return self.store / fsio.MANIFESTS / manifest_file(self.manifest.name)

    def pack_path(self, pack_id: str) -> Path:
        return self.store / fsio.PACKS / pack_file(pack_id)


def prepare(backup_dir: Path, backup: LocalPageBackup) -> list[PageUpload] | None:
    """Each database's part of ``backup`` (manifest read, packs closed over their bases);
    None when a database its metadata names has no manifest (a backup that never completed)."""
    parts: list[PageUpload] = []
    for db in backup.infos:
        store = store_path(backup_dir, db, create=False)
        if store is None:
            return None
        with fsio.open_store(store, exclusive=False, timeout_s=LOCK_TIMEOUT_S) as dirs:
            m = load_manifest(dirs, backup.name)
            packs = _closure(dirs, set(m.packs))
        expected = m.metadata.get("backup_databases")
        names = [d for d in expected if isinstance(d, str)] if isinstance(expected, list) else []
        if any(d not in backup.infos for d in names):
            return None
        sequence = m.metadata.get("sequence")
        origin = offsite.Origin(
            policy=str(m.metadata.get("policy", "")),
            sequence=sequence if type(sequence) is int else None,
            created_at=datetime.fromisoformat(m.created_at),
            databases=tuple(sorted(names or backup.infos)),
            packs=tuple(sorted(packs)),
        )
        parts.append(PageUpload(db, store, m, origin.packs, origin))
    return parts


#: (store, pack) -> the packs holding the bases of its deltas (packs are immutable).
_BASES: dict[tuple[str, str], frozenset[str]] = {}
#: (store, backup, inode, size, mtime_ns of its manifest) -> every pack it needs.
_NEEDS: dict[tuple[str, str, int, int, int], frozenset[str]] = {}
_LIMIT = 100_000
_cache_lock = threading.Lock()


def _closure(dirs: fsio.StoreDirs, named: set[str]) -> set[str]:
    """``named`` and, transitively, the packs holding the bases of their deltas (each pack's
    index read once per process)."""
    marked: set[str] = set()
    todo = sorted(named)
    while todo:
        pack_id = todo.pop()
        if pack_id in marked:
            continue
        marked.add(pack_id)
        key = (str(dirs.root), pack_id)
        with _cache_lock:
            bases = _BASES.get(key)
        if bases is None:
            bases = read_index(dirs.packs_fd, pack_id, where=dirs.packs).bases
            with _cache_lock:
                if len(_BASES) >= _LIMIT:
                    _BASES.clear()
                _BASES[key] = bases
        todo.extend(sorted(bases - marked))
    return marked


def needed_packs(store: Path, name: str) -> frozenset[str]:
    """Every pack backup ``name`` of ``store`` needs, remembered by its manifest file's
    identity: an unchanged store costs a stat per backup, not a read of every manifest."""
    st = (store / fsio.MANIFESTS / manifest_file(name)).lstat()
    key = (str(store), name, st.st_ino, st.st_size, st.st_mtime_ns)
    with _cache_lock:
        known = _NEEDS.get(key)
    if known is not None:
        return known
    with fsio.open_store(store, exclusive=False, timeout_s=LOCK_TIMEOUT_S) as dirs:
        needs = frozenset(_closure(dirs, set(load_manifest(dirs, name).packs)))
    with _cache_lock:
        if len(_NEEDS) >= _LIMIT:
            _NEEDS.clear()
        _NEEDS[key] = needs
    return needs


def check_pack(store: Path, pack_id: str, *, should_stop: Callable[[], bool]) -> str:
    """Read pack ``pack_id`` whole: every page it holds (deltas over their bases) hashes to
    its slot's SHA-256; the SHA-256 of the file's bytes. PackFormatError naming the pack."""
    with fsio.open_store(store, exclusive=False, timeout_s=LOCK_TIMEOUT_S) as dirs:
        reader = PackReader(dirs)
        try:
            digests = reader.index(pack_id).digests
            for slot, digest in enumerate(digests):
                if slot % 64 == 0 and should_stop():
                    raise OperationAbortedError(f"check of pack {pack_id}")
                page, _ = reader.page(pack_id, slot)
                if hashlib.sha256(page).digest() != digest:
                    raise PackFormatError(pack_id, f"slot {slot} does not hash to its SHA-256")
        finally:
            reader.close()
        fd = open_file(dirs.packs_fd, pack_file(pack_id), os.O_RDONLY, where=dirs.packs)
        return _sha256_fd(fd)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a regular file, never read through a link."""
    return _sha256_fd(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC))


def _sha256_fd(fd: int) -> str:
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class OffsiteState:
    """What the store holds of one backup: ``confirmed`` (every database's manifest made from
    the local file, and every pack it needs), with the newest upload time of its manifests;
    else which of its objects are missing or were made from other bytes (``mismatch``)."""

    confirmed: bool
    modified: datetime | None = None
    mismatch: str | None = None


def offsite_state(
    backup: LocalPageBackup,
    objects: Mapping[str, offsite.OffsiteObject],
    *,
    encrypted: bool,
    sha256: Callable[[Path], str],
) -> OffsiteState:
    """Whether ``backup`` is confirmed offsite (``objects``: the page store listing by name)."""
    newest: datetime | None = None
    for db, info in backup.infos.items():
        obj = objects.get(manifest_object(db, backup.name, encrypted=encrypted))
        if obj is None or not obj.confirmed or obj.record is None or obj.record.origin is None:
            return OffsiteState(False)
        source = obj.record.source_sha256
        if source != sha256(info.path) and source not in replaced_versions(info.path):
            return OffsiteState(False, mismatch=obj.name)
        for pack_id in obj.record.origin.packs:
            pack = objects.get(pack_object(db, pack_id, encrypted=encrypted))
            if pack is None or not pack.confirmed:
                return OffsiteState(False)
        newest = obj.modified if newest is None else max(newest, obj.modified)
    return OffsiteState(True, newest)


_REPLACED: dict[Path, tuple[tuple[int, int, int], frozenset[str]]] = {}
_REPLACED_LOCK = threading.Lock()


def replaced_versions(path: Path) -> frozenset[str]:
    """The SHA-256 of the earlier bytes a repack replaced in the manifest file ``path``
    (pagestore/repack.py): a copy of one of them offsite is a copy of this backup (its image
    is the same; it names the old packs). Remembered by the file's identity; empty when it
    cannot be read or says nothing."""
    try:
        st = path.lstat()
    except OSError:
        return frozenset()
    ident = (st.st_ino, st.st_size, st.st_mtime_ns)
    with _REPLACED_LOCK:
        seen = _REPLACED.get(path)
    if seen is not None and seen[0] == ident:
        return seen[1]
    try:
        m = parse_manifest(path.name.removesuffix(".json"), _read_manifest(path))
        versions = frozenset(m.replaces)
    except (OSError, PageStoreError):
        versions = frozenset()
    with _REPLACED_LOCK:
        _REPLACED[path] = (ident, versions)
    return versions


def _read_manifest(path: Path) -> bytes:
    """A manifest file's bytes (no link followed, at most the manifests' limit)."""
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return fsio.read_file(fd, path.name, where=path, limit=MAX_BYTES)
    finally:
        os.close(fd)


def backups_with_store(backup_dir: Path) -> bool:
    """Whether the backup directory holds any page store (nothing to do offsite otherwise)."""
    return bool(store_names(backup_dir))
