"""Offsite copies as the jobs use them: open the configured store, list what it holds, and
fetch an archive from it into the backup directory for the normal verify, pre-restore and
restore path.

A fetched archive is downloaded (checked against its record, decrypted) and verified in a
staging area, and appears in the backup directory only once it passed, under its own name,
never over a local file (jobs/offsitecopy.py). ``--latest`` falls back to the next newest
confirmed copy when one fails.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import structlog

from backup_sidecar import archiver, offsite
from backup_sidecar.errors import (
    CorruptArchiveError,
    OffsiteNothingToRestoreError,
    OffsiteNoUsableCopyError,
    OffsiteObjectCorruptError,
    OffsiteObjectNotFoundError,
)
from backup_sidecar.jobs.effort import Effort
from backup_sidecar.jobs.offsite_order import copy_order, raise_sequence, upload_order
from backup_sidecar.jobs.offsite_pagefetch import fetch_page_backup
from backup_sidecar.jobs.offsitecopy import Fetched, Skipped, archive_name, fetch_copy
from backup_sidecar.jobs.runtime import OffsiteSpec, Runtime

__all__ = [
    "Fetched",
    "Skipped",
    "archive_name",
    "fetch_archive",
    "listing_json",
    "open_store",
    "upload_order",
]

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


#: A copy that fails with one of these is passed over by ``--latest`` for the next newest: the
#: object is damaged, vanished, or downloads but fails verify. A wrong identity, an unreachable
#: store or a local conflict would fail every copy alike: they stop the fetch at once.
UNUSABLE_COPY = (OffsiteObjectCorruptError, OffsiteObjectNotFoundError, CorruptArchiveError)


def fetch_archive(
    rt: Runtime,
    ref: str | None,
    *,
    environ: Mapping[str, str],
    effort: Effort | None = None,
    on_skip: Callable[[Skipped], None] | None = None,
) -> Fetched:
    """Bring the offsite archive ``ref`` (a name, ``NAME.tar.gz`` or its ``.age`` object;
    None: the newest confirmed one, by origin: jobs/offsite_order.py) into the backup directory,
    downloaded and verified in staging first (jobs/offsitecopy.py): a copy that fails leaves
    nothing there. With ``ref`` None, a copy that fails (``UNUSABLE_COPY``) is reported to
    ``on_skip`` and logged, and the next newest confirmed copy is tried."""
    spec = rt.require_offsite()
    effort = effort or rt.effort
    store = open_store(spec, environ=environ)
    listing = store.list(encrypted_only=bool(spec.recipients))
    objects = listing.objects
    archiver.check_backup_dir(rt.backup_dir)
    raise_sequence(rt.backup_dir, objects, rt.keep)  # a rebuilt host's next backup is newest
    keys = _Identities(spec)
    try:
        candidates = _newest_first(store, objects) if ref is None else [_named(store, listing, ref)]
    except OffsiteObjectNotFoundError as missing:
        if ref is None:
            raise
        try:  # not an archive: an incremental backup of that name in the page stores, if any
            return fetch_page_backup(rt, store, ref, keys=keys.for_object, effort=effort)
        except OffsiteObjectNotFoundError:
            raise missing from None
    skipped: list[Skipped] = []
    for chosen in candidates:
        local = archive_name(chosen.name)
        assert local is not None  # _newest_first and _named pick archives only
        try:
            identities, source = keys.for_object(chosen)
            got = fetch_copy(
                rt,
                store,
                chosen,
                local,
                identities=identities,
                identity_source=source,
                effort=effort,
            )
        except UNUSABLE_COPY as exc:
            if ref is not None:
                raise
            skip = Skipped(object=chosen.name, reason=str(exc))
            log.warning("offsite_copy_skipped", object=chosen.name, reason=str(exc))
            skipped.append(skip)
            if on_skip is not None:
                on_skip(skip)
            continue
        log.info(
            "offsite_download_completed",
            archive=local,
            object=chosen.name,
            size=got.size,
            decrypted=got.decrypted,
            reused=got.reused,
            skipped=len(skipped),
        )
        return replace(got, skipped=tuple(skipped))
    raise OffsiteNoUsableCopyError(store.url, [(s.object, s.reason) for s in skipped])


class _Identities:
    """The age identities, read from ``offsite.encryption.identity_file`` once, when the first
    encrypted copy needs them."""

    def __init__(self, spec: OffsiteSpec) -> None:
        self._spec = spec
        self._loaded: tuple[Any, ...] | None = None

    def for_object(self, obj: offsite.OffsiteObject) -> tuple[tuple[Any, ...], str]:
        path = self._spec.identity_file
        if not obj.encrypted or path is None:
            return (), "offsite.encryption.identity_file (not set)"
        if self._loaded is None:
            self._loaded = tuple(offsite.load_identities(path))
        return self._loaded, str(path)


def _newest_first(
    store: offsite.Store, objects: tuple[offsite.OffsiteObject, ...]
) -> list[offsite.OffsiteObject]:
    archives = [o for o in objects if o.confirmed and archive_name(o.name) is not None]
    if not archives:
        raise OffsiteNothingToRestoreError(store.url)
    return sorted(archives, key=copy_order, reverse=True)


def _named(store: offsite.Store, listing: offsite.Listing, ref: str) -> offsite.OffsiteObject:
    stem = ref.removesuffix(_AGE).removesuffix(archiver.ARCHIVE_SUFFIX)
    archiver.validate_name(stem)
    wanted = f"{stem}{archiver.ARCHIVE_SUFFIX}"
    found = [o for o in listing.objects if o.name in (wanted, wanted + _AGE)]
    if not found:
        for problem in listing.problems:  # e.g. a link planted under that name: say why
            if problem.key in (store.key(wanted), store.key(wanted + _AGE)):
                raise OffsiteObjectCorruptError(wanted, f"{problem.key} {problem.reason}")
        raise OffsiteObjectNotFoundError(store.url, wanted)
    # A confirmed copy first; of two, the encrypted one (the plain one may be older).
    return max(found, key=lambda o: (o.confirmed, o.encrypted))
