"""Page stores offsite: the names of their objects, and a listing of them.

An incremental policy's backups live in one page store per database (docs/pagestore.md); the
uploader sends each store's packs and manifests as objects of their own, under the same
prefix as the archives, mirroring the local layout::

    <prefix>/pages/<db>/packs/<32 hex>.pack[.age]       immutable, uploaded once
    <prefix>/pages/<db>/manifests/<name>.json[.age]     one backup of that database
    <prefix>/.offsite/sums/pages/<db>/.../<object>.json  each one's checksum record

An object name here is the path below the prefix (``pages/<db>/packs/<id>.pack.age``); the
Store's upload, confirm, download and delete take it as they take an archive's name. The
archives' listing leaves ``pages/`` out; ``list_pages`` lists it, each object with its verdict
(its record, size and ETag), every odd entry a problem of its own, never an error.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from backup_sidecar.offsite import record as rec
from backup_sidecar.offsite.results import Listing, ListProblem, OffsiteObject
from backup_sidecar.offsite.verdict import listed_object

if TYPE_CHECKING:
    from backup_sidecar.offsite.bucket import Bucket
    from backup_sidecar.offsite.meta import Meta

PAGES_DIR = "pages"
PACK_SUFFIX = ".pack"
MANIFEST_SUFFIX = ".json"
_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}"
_PAGE_NAME = re.compile(
    rf"^{PAGES_DIR}/(?P<db>{_PART})/"
    rf"(?:packs/(?P<pack>[0-9a-f]{{32}})\.pack|manifests/(?P<backup>{_PART})\.json)"
    rf"(?P<age>\.age)?$"
)


@dataclass(frozen=True)
class PageName:
    """What an object name under ``pages/`` says: its database, and a pack or a manifest."""

    db: str
    pack: str | None
    backup: str | None
    encrypted: bool


def parse_page_name(name: str) -> PageName | None:
    """The parts of a page store object's name, None for any other name."""
    m = _PAGE_NAME.match(name)
    if m is None or ".." in m["db"] or (m["backup"] is not None and ".." in m["backup"]):
        return None
    return PageName(m["db"], m["pack"], m["backup"], m["age"] is not None)


def pack_object(db: str, pack_id: str, *, encrypted: bool) -> str:
    return f"{PAGES_DIR}/{db}/packs/{pack_id}{PACK_SUFFIX}" + (".age" if encrypted else "")


def manifest_object(db: str, backup: str, *, encrypted: bool) -> str:
    return f"{PAGES_DIR}/{db}/manifests/{backup}{MANIFEST_SUFFIX}" + (".age" if encrypted else "")


#: A record read once, kept while its object (key, size, ETag) stays the same.
RecordCache = MutableMapping[tuple[str, int, str | None], rec.Record]


def list_pages(store: Bucket, *, encrypted_only: bool, cache: RecordCache | None = None) -> Listing:
    """Every object under ``<prefix>/pages/`` with its verdict; a key that is no page store
    object's name, a link, an unreadable record is a problem of its own. ``cache`` keeps
    parsed records between passes (a pass otherwise reads each record again)."""
    base = rec.join(store.target.prefix, "")
    start = len(base) + 1 if base else 0
    metas, odd = store.objects.scan(rec.join(store.target.prefix, PAGES_DIR, ""))
    sums_at = rec.join(store.target.prefix, rec.RECORD_DIR, PAGES_DIR, "")
    sums, sums_odd = store.objects.scan(sums_at)
    problems = [ListProblem(key, reason) for key, reason in [*odd, *sums_odd]]
    record_start = len(rec.join(store.target.prefix, rec.RECORD_DIR, "")) + 1
    records = {
        m.key[record_start:].removesuffix(".json"): m for m in sums if m.key.endswith(".json")
    }
    objects: list[OffsiteObject] = []
    seen: set[tuple[str, int, str | None]] = set()
    for meta in sorted(metas, key=lambda m: m.key):
        name = meta.key[start:]
        parsed = parse_page_name(name)
        if parsed is None:
            problems.append(ListProblem(meta.key, "not a page store object name"))
            continue
        record_meta = records.get(name)
        if record_meta is not None:
            seen.add((record_meta.key, record_meta.size, record_meta.etag))
        objects.append(_verdict(store, name, meta, record_meta, encrypted_only, cache))
    for stale in [k for k in cache or {} if k not in seen]:  # records gone: forgotten
        del cache[stale]  # type: ignore[union-attr]
    listed = {o.name for o in objects}
    for orphan in sorted(records.keys() - listed):
        if parse_page_name(orphan) is not None:
            problems.append(ListProblem(store.record_key(orphan), "checksum record without object"))
    return Listing(tuple(objects), tuple(problems))


def _verdict(
    store: Bucket,
    name: str,
    meta: Meta,
    record_meta: Meta | None,
    encrypted_only: bool,
    cache: RecordCache | None,
) -> OffsiteObject:
    """The object's verdict; its record read once per record version while ``cache`` holds it."""

    def read() -> rec.Record | None:
        assert record_meta is not None
        ident = (record_meta.key, record_meta.size, record_meta.etag)
        record = cache.get(ident) if cache is not None and record_meta.etag else None
        if record is None:
            record = store.read_record(name)
            if record is not None and cache is not None and record_meta.etag:
                cache[ident] = record
        return record

    return listed_object(
        name, meta, read_record=None if record_meta is None else read, encrypted_only=encrypted_only
    )
