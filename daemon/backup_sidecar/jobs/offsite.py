"""Offsite copies as the jobs use them: open the configured store, list what it holds, and
fetch an archive from it into the backup directory (checked, decrypted) for the normal
verify, pre-restore and restore path.

A fetched archive is written under its own name, never over a local file; a wrong or missing
identity, a damaged object or an unreachable store leave nothing behind (the library's
download publishes its file only once every check passed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from backup_sidecar import archiver, offsite
from backup_sidecar.archiver.staging import publish
from backup_sidecar.errors import (
    ArchiveExistsError,
    OffsiteNothingToRestoreError,
    OffsiteObjectNotFoundError,
)
from backup_sidecar.jobs.runtime import OffsiteSpec, Runtime

log = structlog.get_logger(__name__)

_AGE = ".age"


def open_store(spec: OffsiteSpec, *, environ: Mapping[str, str]) -> offsite.Store:
    """The configured store, credentials from ``environ`` (the AWS variables or file)."""
    return offsite.Store.from_url(
        spec.url,
        environ=environ,
        endpoint=spec.endpoint,
        region=spec.region,
        path_style=spec.path_style,
        retry=offsite.RetryPolicy(attempts=spec.attempts),
    )


def archive_name(object_name: str) -> str | None:
    """The local archive name of an offsite object (``NAME.tar.gz`` or ``NAME.tar.gz.age``),
    None for an object that is not one."""
    local = object_name.removesuffix(_AGE)
    if not local.endswith(archiver.ARCHIVE_SUFFIX):
        return None
    try:
        return archiver.validate_name(local.removesuffix(archiver.ARCHIVE_SUFFIX))
    except ValueError:
        return None


def listing_json(store: offsite.Store, listing: offsite.Listing) -> dict[str, Any]:
    """`list --offsite --json`: every object (confirmed or why not) and every problem."""
    return {
        "url": store.url,
        "archives": [
            {
                "name": archive_name(o.name),
                "object": o.name,
                "size": o.size,
                "modified": o.modified.isoformat(),
                "encrypted": o.encrypted,
                "confirmed": o.confirmed,
                "reason": o.reason,
            }
            for o in listing.objects
        ],
        "problems": [{"key": p.key, "reason": p.reason} for p in listing.problems],
    }


@dataclass(frozen=True)
class Fetched:
    """An archive fetched from offsite into the backup directory."""

    archive: str
    object: str
    size: int
    decrypted: bool


def fetch_archive(rt: Runtime, ref: str | None, *, environ: Mapping[str, str]) -> Fetched:
    """Download the offsite archive ``ref`` (a name, ``NAME.tar.gz`` or its ``.age`` object;
    None: the newest confirmed one, by the store's upload time) into the backup directory."""
    spec = rt.require_offsite()
    store = open_store(spec, environ=environ)
    objects = store.list().objects
    chosen = _newest(store, objects) if ref is None else _named(store, objects, ref)
    local = archive_name(chosen.name)
    assert local is not None  # _newest and _named pick archives only
    archiver.check_backup_dir(rt.backup_dir)
    dest = rt.backup_dir / f"{local}{archiver.ARCHIVE_SUFFIX}"
    if dest.exists() or dest.is_symlink():
        raise ArchiveExistsError(dest)
    identities: tuple[Any, ...] = ()
    source = "offsite.encryption.identity_file (not set)"
    if chosen.encrypted and spec.identity_file is not None:
        source = str(spec.identity_file)
        identities = offsite.load_identities(spec.identity_file)
    with archiver.staging_area(rt.backup_dir, purpose="offsite") as area:
        # Written in a locked staging area (a killed download is cleaned up like any other
        # abandoned one), then linked into place, never over an archive published meanwhile.
        staged = area / dest.name
        got = store.download(chosen.name, staged, identities=identities, identity_source=source)
        publish(staged, dest)
    log.info(
        "offsite_download_completed",
        archive=local,
        object=chosen.name,
        size=got.size,
        decrypted=got.decrypted,
    )
    return Fetched(archive=local, object=chosen.name, size=got.size, decrypted=got.decrypted)


def _newest(
    store: offsite.Store, objects: tuple[offsite.OffsiteObject, ...]
) -> offsite.OffsiteObject:
    archives = [o for o in objects if o.confirmed and archive_name(o.name) is not None]
    if not archives:
        raise OffsiteNothingToRestoreError(store.url)
    return max(archives, key=lambda o: (o.modified, o.name))


def _named(
    store: offsite.Store, objects: tuple[offsite.OffsiteObject, ...], ref: str
) -> offsite.OffsiteObject:
    stem = ref.removesuffix(_AGE).removesuffix(archiver.ARCHIVE_SUFFIX)
    archiver.validate_name(stem)
    wanted = f"{stem}{archiver.ARCHIVE_SUFFIX}"
    found = [o for o in objects if o.name in (wanted, wanted + _AGE)]
    if not found:
        raise OffsiteObjectNotFoundError(store.url, wanted)
    # A confirmed copy first; of two, the encrypted one (the plain one may be older).
    return max(found, key=lambda o: (o.confirmed, o.encrypted))
