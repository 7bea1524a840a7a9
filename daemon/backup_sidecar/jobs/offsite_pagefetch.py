"""An incremental backup brought back from offsite: `restore NAME --from-offsite` (and
``--latest``) when NAME is an incremental backup in the store's page stores.

For every database the backup covers (its manifest records' origin says which), the manifest
object is downloaded (checked against its record, decrypted) into a locked staging area, then
the packs it needs: those its pages are in, then, transitively, the packs holding the bases of
their deltas (read from each downloaded pack's index). A pack the local page store already
holds is copied into staging instead (packs are immutable) when it is sound: unmarked and the
bytes uploaded (jobs/offsite_localpacks.py); one that is not is downloaded, and replaces the
local one at publication. The staged store is then rebuilt
into a scratch image, every page against its SHA-256 and the image against the manifest's:
only a backup that rebuilds whole is published into ``<backup_dir>/pages/<db>/`` (packs first,
then the manifest, under the store's exclusive lock, never over a different file), and the
normal restore path (jobs/restore.py) takes it from there. A fetch that fails leaves nothing in
the page stores; a kill leaves an abandoned staging area, removed like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from backup_sidecar import archiver, offsite, pagestore
from backup_sidecar.errors import (
    ManifestFormatError,
    OffsiteObjectCorruptError,
    OffsiteObjectNotFoundError,
    PageStoreError,
)
from backup_sidecar.jobs.effort import Effort
from backup_sidecar.jobs.offsite_localpacks import (
    already_here,
    copy_sound_pack,
    pack_sources,
    publish,
)
from backup_sidecar.jobs.offsitecopy import Fetched
from backup_sidecar.jobs.pagestores import misplaced, store_path
from backup_sidecar.jobs.runtime import Runtime
from backup_sidecar.offsite.pagekeys import list_pages, pack_object, parse_page_name
from backup_sidecar.pagestore import fsio
from backup_sidecar.pagestore.fsio import LOCK_TIMEOUT_S
from backup_sidecar.pagestore.manifest import MAX_BYTES, Manifest, manifest_file, parse_manifest
from backup_sidecar.pagestore.packformat import pack_file, read_index

log = structlog.get_logger(__name__)

#: (identities, where they came from) for an object: jobs/offsite.py's loader.
Keys = Callable[[offsite.OffsiteObject], tuple[tuple[Any, ...], str]]


def offsite_manifests(
    objects: Sequence[offsite.OffsiteObject], name: str, *, encrypted_only: bool
) -> dict[str, offsite.OffsiteObject]:
    """Database -> the confirmed manifest object of backup ``name`` (the encrypted one first)."""
    found: dict[str, offsite.OffsiteObject] = {}
    for obj in objects:
        parsed = parse_page_name(obj.name)
        if parsed is None or parsed.backup != name or not obj.confirmed:
            continue
        if encrypted_only and not parsed.encrypted:
            continue
        if parsed.db not in found or parsed.encrypted:
            found[parsed.db] = obj
    return dict(sorted(found.items()))


def complete_manifests(
    store: offsite.Store,
    objects: Sequence[offsite.OffsiteObject],
    name: str,
    *,
    encrypted_only: bool,
) -> dict[str, offsite.OffsiteObject]:
    """Every database's confirmed manifest object of backup ``name`` (its record's origin says
    which databases): OffsiteObjectNotFoundError when there is none, OffsiteObjectCorruptError
    when a database's is missing, or when the backup's manifests are there but none is
    confirmed (the reason one is not)."""
    manifests = offsite_manifests(objects, name, encrypted_only=encrypted_only)
    if not manifests:
        there = _unconfirmed(objects, name, db=None)
        if there is not None:  # not "no object named": say it is unconfirmed, and why
            raise OffsiteObjectCorruptError(there.name, f"unconfirmed: {there.reason}")
        raise OffsiteObjectNotFoundError(store.url, name)
    first = next(iter(manifests.values()))
    origin = first.record.origin if first.record is not None else None
    for db in origin.databases if origin is not None else ():
        if db not in manifests:
            fault = f"no confirmed manifest offsite for {db!r}"
            there = _unconfirmed(objects, name, db=db)
            if there is not None:
                fault += f": {there.name} is unconfirmed: {there.reason}"
            raise OffsiteObjectCorruptError(name, fault)
    return manifests


def _unconfirmed(
    objects: Sequence[offsite.OffsiteObject], name: str, *, db: str | None
) -> offsite.OffsiteObject | None:
    """A manifest object of backup ``name`` (of ``db``, if given) that is not confirmed."""
    for obj in objects:
        parsed = parse_page_name(obj.name)
        if parsed is None or parsed.backup != name or obj.confirmed:
            continue
        if db is None or parsed.db == db:
            return obj
    return None


def stage_checked(
    store: offsite.Store,
    manifests: dict[str, offsite.OffsiteObject],
    area: Path,
    *,
    backup_dir: Path | None,
    keys: Keys,
    encrypted_only: bool,
    should_stop: Callable[[], bool],
    sources: Mapping[str, str] | None = None,
    refused: dict[str, set[str]] | None = None,
) -> tuple[dict[str, Path], dict[str, Manifest], int]:
    """Each database's manifest and the packs it needs downloaded into ``area/pages/<db>``
    (the sound packs ``backup_dir``'s stores hold copied instead: jobs/offsite_localpacks.py,
    ``sources`` the uploaded packs' SHA-256 by object name; the local packs refused are added
    to ``refused[db]``), rebuilt and checked: the staged stores, their manifests, the bytes
    downloaded. OffsiteObjectCorruptError naming the manifest object when a rebuild fails."""
    size = 0
    staged: dict[str, Path] = {}
    parsed: dict[str, Manifest] = {}
    for db, obj in manifests.items():
        identities, source = keys(obj)

        def get(object_name: str, dest: Path) -> offsite.Downloaded:
            return store.download(
                object_name,
                dest,
                identities=identities,  # noqa: B023 (used before the next database)
                identity_source=source,  # noqa: B023
                encrypted_only=encrypted_only,
                cancel=should_stop,
            )

        root = area / "pages" / db
        bad = refused.setdefault(db, set()) if refused is not None else set()
        m, got = _stage(backup_dir, db, obj, root, get, sources or {}, bad)
        size += got
        _check_origin(obj, m)
        try:
            # every page against its SHA-256, the image against the manifest
            pagestore.rebuild(root, m.name, out=area / f"{db}.image")
        except PageStoreError as exc:
            raise OffsiteObjectCorruptError(obj.name, str(exc)) from None
        (area / f"{db}.image").unlink()
        staged[db], parsed[db] = root, m
    return staged, parsed, size


def fetch_page_backup(
    rt: Runtime,
    store: offsite.Store,
    name: str,
    *,
    keys: Keys,
    effort: Effort,
    objects: Sequence[offsite.OffsiteObject] | None = None,
) -> Fetched:
    """Bring the offsite incremental backup ``name`` into the local page stores, rebuilt and
    checked first; OffsiteObjectNotFoundError when the store holds no such backup."""
    encrypted_only = bool(rt.offsite and rt.offsite.recipients)
    if objects is None:
        objects = list_pages(store, encrypted_only=encrypted_only).objects
    manifests = complete_manifests(store, objects, name, encrypted_only=encrypted_only)
    first = next(iter(manifests.values()))
    sources = pack_sources(list(objects))
    if already_here(rt.backup_dir, manifests, sources):
        return Fetched(archive=name, object=first.name, size=0, decrypted=False, reused=True)
    refused: dict[str, set[str]] = {}
    with archiver.staging_area(rt.backup_dir, purpose="offsite") as area:
        staged, _, size = stage_checked(
            store,
            manifests,
            area,
            backup_dir=rt.backup_dir,
            keys=keys,
            encrypted_only=encrypted_only,
            should_stop=effort.should_stop,
            sources=sources,
            refused=refused,
        )
        for db, root in staged.items():
            publish(rt.backup_dir, db, root, name, refused.get(db, set()))
    log.info("offsite_pages_fetched", backup=name, databases=list(manifests), size=size)
    decrypted = any(o.encrypted for o in manifests.values())
    mended = tuple(f"{db}/{p}" for db, packs in sorted(refused.items()) for p in sorted(packs))
    return Fetched(archive=name, object=first.name, size=size, decrypted=decrypted, mended=mended)


def _stage(
    backup_dir: Path | None,
    db: str,
    obj: offsite.OffsiteObject,
    root: Path,
    get: Callable[[str, Path], offsite.Downloaded],
    sources: Mapping[str, str],
    refused: set[str],
) -> tuple[Manifest, int]:
    """The manifest and every pack it needs in the staged store ``root`` (a local pack that is
    not sound downloaded instead, and added to ``refused``); bytes downloaded."""
    parsed = parse_page_name(obj.name)
    assert parsed is not None and parsed.backup is not None
    name = parsed.backup
    with fsio.open_store(root, exclusive=True, timeout_s=LOCK_TIMEOUT_S) as dirs:
        size = get(obj.name, dirs.root / "manifest.download").size
        data = (dirs.root / "manifest.download").read_bytes()
        if len(data) > MAX_BYTES:
            raise OffsiteObjectCorruptError(obj.name, f"a manifest over {MAX_BYTES} bytes")
        try:
            m = parse_manifest(name, data)
        except (ManifestFormatError, ValueError) as exc:
            raise OffsiteObjectCorruptError(obj.name, str(exc)) from None
        why = misplaced(db, m.metadata)
        if why is not None:
            raise OffsiteObjectCorruptError(obj.name, why)
        local = store_path(backup_dir, db, create=False) if backup_dir else None
        todo, seen = sorted(m.packs), set()
        while todo:
            pack_id = todo.pop()
            if pack_id in seen:
                continue
            seen.add(pack_id)
            dest = dirs.packs / pack_file(pack_id)
            key = pack_object(db, pack_id, encrypted=parsed.encrypted)
            fault = copy_sound_pack(local, db, pack_id, dest, expected=sources.get(key))
            if fault is not None:
                if fault != "absent":
                    refused.add(pack_id)
                size += get(key, dest).size
            try:
                bases = read_index(dirs.packs_fd, pack_id, where=dirs.packs).bases
            except PageStoreError as exc:
                raise OffsiteObjectCorruptError(obj.name, str(exc)) from None
            todo.extend(sorted(bases - seen))
        fsio.write_file(
            dirs.manifests_fd, manifest_file(name), data, where=dirs.manifests, replace=False
        )
    return m, size


def _check_origin(obj: offsite.OffsiteObject, m: Manifest) -> None:
    """The manifest's own policy and sequence are its record's (a copy swapped with another's
    record fails as damaged, as an archive's does)."""
    origin = obj.record.origin if obj.record is not None else None
    if origin is None:
        return
    policy, sequence = m.metadata.get("policy"), m.metadata.get("sequence")
    if policy != origin.policy or sequence != origin.sequence:
        raise OffsiteObjectCorruptError(
            obj.name,
            f"the manifest says policy {policy!r} sequence {sequence}, its checksum record "
            f"{origin.policy!r} {origin.sequence}",
        )
