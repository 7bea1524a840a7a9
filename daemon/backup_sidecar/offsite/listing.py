"""A store's listing: every object with its verdict, every odd entry a problem of its own."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from backup_sidecar.offsite import record as rec
from backup_sidecar.offsite.pagekeys import PAGES_DIR
from backup_sidecar.offsite.results import Listing, ListProblem
from backup_sidecar.offsite.verdict import listed_object

if TYPE_CHECKING:
    from backup_sidecar.offsite.bucket import Bucket
    from backup_sidecar.offsite.meta import Meta


def list_store(store: Bucket, *, encrypted_only: bool) -> Listing:
    """Every object under the prefix with its verdict; a malformed key, a link, a name that
    is not UTF-8, an unreadable or orphaned record is a problem of its own, never an error
    that stops the listing. With ``encrypted_only`` a plaintext object is never confirmed."""
    prefix = rec.join(store.target.prefix, "")
    start = len(prefix) + 1 if prefix else 0
    data: dict[str, Meta] = {}
    records: set[str] = set()
    metas, odd = store.objects.scan(prefix)
    problems = [ListProblem(key, reason) for key, reason in odd]
    record_dir = rec.RECORD_DIR + "/"
    # A record entry that exists but is no regular file (a link, a FIFO, a directory) still
    # counts as a record: its object is unconfirmed for that reason, never an unfinished upload.
    for rel in [key[start:] for key, _ in odd] + [meta.key[start:] for meta in metas]:
        if rel.startswith(record_dir):
            entry = rel[len(record_dir) :].split("/", 1)[0]
            if entry.endswith(".json"):
                records.add(entry[: -len(".json")])
    for meta in metas:
        rel = meta.key[start:]
        if rel.startswith((".offsite/", f"{PAGES_DIR}/")):  # page stores: pagekeys.list_pages
            continue
        if not rec.valid_name(rel):
            problems.append(ListProblem(meta.key, "not an archive object name"))
            continue
        data[rel] = meta
    reported = {p.key for p in problems}
    for orphan in sorted(records - data.keys()):
        if store.record_key(orphan) not in reported:  # a link or FIFO says so already
            problems.append(ListProblem(store.record_key(orphan), "checksum record without object"))
    objects = [
        listed_object(
            name,
            meta,
            read_record=functools.partial(store.read_record, name) if name in records else None,
            encrypted_only=encrypted_only,
        )
        for name, meta in sorted(data.items())
    ]
    return Listing(tuple(objects), tuple(problems))
