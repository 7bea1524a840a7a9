"""The local store's packs, as a fetch from offsite may use them (jobs/offsite_pagefetch.py).

A fetch copies a pack the local page store holds instead of downloading it, and a backup whose
manifests are all here is restored from the local store as it is. A local pack is used only
when it is sound: not marked damaged (``packs/<id>.damaged``) and, when the offsite listing
knows the SHA-256 of the pack that was uploaded (its record's ``source_sha256``), of exactly
those bytes. A pack that is not (one byte flipped on the local disk, found or not yet) is
downloaded from offsite instead, into staging, checked there with the rest, and put in place
of the local one when the fetch is published (``mend``): the local side's fault is logged as
``offsite_local_pack_refused``, never blamed on the offsite object.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path

import structlog

from backup_sidecar import offsite
from backup_sidecar.errors import ManifestFormatError, OffsiteLocalCopyError
from backup_sidecar.jobs.pagestores import store_path
from backup_sidecar.offsite.pagekeys import pack_object, parse_page_name
from backup_sidecar.pagestore import fsio
from backup_sidecar.pagestore.damage import SUFFIX as DAMAGED_SUFFIX
from backup_sidecar.pagestore.fsio import LOCK_TIMEOUT_S
from backup_sidecar.pagestore.manifest import MAX_BYTES, manifest_file, parse_manifest
from backup_sidecar.pagestore.packformat import pack_file

log = structlog.get_logger(__name__)
_CHUNK = 1 << 20


def pack_sources(objects: list[offsite.OffsiteObject]) -> dict[str, str]:
    """Pack object name -> the SHA-256 of the local pack it was uploaded from (confirmed
    objects whose record says)."""
    out: dict[str, str] = {}
    for obj in objects:
        if obj.confirmed and obj.record is not None and obj.record.source_sha256 is not None:
            out[obj.name] = obj.record.source_sha256
    return out


def copy_sound_pack(
    local: Path | None,
    db: str,
    pack_id: str,
    dest: Path,
    *,
    expected: str | None,
) -> str | None:
    """Copy the local store's ``pack_id`` into staging at ``dest`` (never through a link; a
    copy, not a hard link) when it is sound; None when copied, else why not ("absent", or the
    fault, logged: the pack is then downloaded)."""
    if local is None:
        return "absent"
    packs = local / fsio.PACKS
    try:
        fd = os.open(packs / pack_file(pack_id), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return "absent"
    fault = None
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as src:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "absent"
        if os.path.lexists(packs / (pack_id + DAMAGED_SUFFIX)):
            fault = "it is marked damaged"
        else:
            with dest.open("xb") as out:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if expected is not None and digest.hexdigest() != expected:
                fault = (
                    f"its sha256 {digest.hexdigest()[:12]}… is not the uploaded {expected[:12]}…"
                )
                dest.unlink()
    if fault is not None:
        _refused(db, pack_id, packs / pack_file(pack_id), fault)
    return fault


def _not_uploaded(got: str, expected: str) -> str:
    return f"its sha256 {got[:12]}… is not the uploaded pack's {expected[:12]}…"


def _refused(db: str, pack_id: str, path: Path, fault: str) -> None:
    log.warning(
        "offsite_local_pack_refused", database=db, pack=pack_id, path=str(path), reason=fault
    )


def local_packs_sound(
    backup_dir: Path,
    db: str,
    packs: tuple[str, ...],
    sources: Mapping[str, str],
    *,
    encrypted: bool,
) -> bool:
    """Whether every pack of ``packs`` is in ``db``'s local store and sound (unmarked, the
    uploaded bytes: each is read through once); a fault is logged."""
    local = store_path(backup_dir, db, create=False)
    if local is None:
        return False
    for pack_id in packs:
        expected = sources.get(pack_object(db, pack_id, encrypted=encrypted))
        path = local / fsio.PACKS / pack_file(pack_id)
        fault = None
        if os.path.lexists(local / fsio.PACKS / (pack_id + DAMAGED_SUFFIX)):
            fault = "it is marked damaged"
        elif expected is not None:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                return False
            with os.fdopen(fd, "rb") as f:
                got = hashlib.file_digest(f, "sha256").hexdigest()
            if got != expected:
                fault = _not_uploaded(got, expected)
        elif not path.is_file():
            return False
        if fault is not None:
            log.warning(
                "offsite_local_pack_refused",
                database=db,
                pack=pack_id,
                path=str(path),
                reason=fault,
            )
            return False
    return True


def mend(dirs: fsio.StoreDirs, staged_pack: Path) -> None:
    """Put the staged (checked) pack in place of the local one of that name, and drop the
    local pack's damage mark (under the store's exclusive lock, the caller's)."""
    os.rename(staged_pack, staged_pack.name, dst_dir_fd=dirs.packs_fd)
    pack_id = staged_pack.name.removesuffix(".pack")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(pack_id + DAMAGED_SUFFIX, dir_fd=dirs.packs_fd)
    log.info("offsite_local_pack_mended", pack=pack_id, path=str(dirs.packs / staged_pack.name))


def already_here(
    backup_dir: Path, manifests: dict[str, offsite.OffsiteObject], sources: Mapping[str, str]
) -> bool:
    """Whether every database's manifest is already local and the one each object was made
    from (a local file of that name made from other bytes is refused, never replaced), and
    every pack it needs (its record's origin says which) is here and sound."""
    here = 0
    for db, obj in manifests.items():
        parsed = parse_page_name(obj.name)
        assert parsed is not None and parsed.backup is not None
        local = store_path(backup_dir, db, create=False)
        path = None if local is None else local / fsio.MANIFESTS / manifest_file(parsed.backup)
        if path is None or not path.exists():
            continue
        source = obj.record.source_sha256 if obj.record is not None else None
        data = path.read_bytes()
        mine = hashlib.sha256(data).hexdigest()
        if source is not None and mine != source:
            if source in _replaced(parsed.backup, data):
                continue  # repacked here since the upload: fetched, and the copy put in place
            raise OffsiteLocalCopyError(
                path, obj.name, f"is another backup (sha256 {mine[:12]}…, not {source[:12]}…)"
            )
        here += 1
    if here != len(manifests):
        return False
    for db, obj in manifests.items():
        origin = obj.record.origin if obj.record is not None else None
        packs = origin.packs if origin is not None else ()
        if not local_packs_sound(backup_dir, db, packs, sources, encrypted=obj.encrypted):
            return False
    return True


def publish(backup_dir: Path, db: str, staged: Path, name: str, refused: set[str]) -> None:
    """Move the staged packs, then the manifest, into the local store (its exclusive lock
    held: no GC sweeps the packs before their manifest lands, nothing else writes there); a
    local pack ``refused`` (not sound) is replaced by the staged, checked one."""
    local = store_path(backup_dir, db, create=True)
    assert local is not None
    with fsio.open_store(local, exclusive=True, timeout_s=LOCK_TIMEOUT_S) as dirs:
        for file in sorted(p.name for p in (staged / fsio.PACKS).glob("*.pack")):
            if file.removesuffix(".pack") in refused and _exists(dirs.packs_fd, file):
                mend(dirs, staged / fsio.PACKS / file)
            elif not _exists(dirs.packs_fd, file):  # else the same immutable pack
                os.rename(staged / fsio.PACKS / file, file, dst_dir_fd=dirs.packs_fd)
        os.fsync(dirs.packs_fd)
        file = manifest_file(name)
        ours = staged / fsio.MANIFESTS / file
        if _exists(dirs.manifests_fd, file):
            mine = fsio.read_file(dirs.manifests_fd, file, where=dirs.manifests, limit=MAX_BYTES)
            theirs = ours.read_bytes()
            if mine == theirs:
                return
            if hashlib.sha256(theirs).hexdigest() not in _replaced(name, mine):
                why = "is another backup"
                raise OffsiteLocalCopyError(dirs.manifests / file, name, why)
            # The local manifest is a repack of the copy (same image, other packs): the copy,
            # whose packs were just checked and published, takes its place (a later repack
            # rewrites it again).
            log.info("offsite_local_manifest_replaced", database=db, backup=name,
                     reason="repacked locally since its upload")  # fmt: skip
        os.rename(ours, file, dst_dir_fd=dirs.manifests_fd)
        os.fsync(dirs.manifests_fd)


def _replaced(name: str, data: bytes) -> tuple[str, ...]:
    """The SHA-256 of the earlier versions a local manifest's repack replaced (its
    ``replaces``); none when it cannot be read."""
    try:
        return parse_manifest(name, data).replaces
    except (ManifestFormatError, ValueError):
        return ()


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True
