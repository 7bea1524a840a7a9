"""Offsite copies: archives in an S3-compatible bucket or a directory, optionally age-encrypted,
with one writer per prefix. A library layer: it imports only itself, ``backup_sidecar.errors``,
the standard library, obstore and pyrage (never the archiver, settings, jobs or service), so the
wiring into config, jobs, CLI, control socket, metrics and health maps plain values onto it.

Client library: **obstore** (Rust object_store), chosen on measurements on this machine against
a real SeaweedFS (issue 15; ``bench/offsite.py`` re-measures it): faster than boto3 on a 64 MiB
upload and on 4 KiB PUTs, one API with the same semantics for ``s3://`` and ``file://`` (LocalStore:
temp file + rename, O_EXCL create), streaming multipart with bounded memory, conditional create
(``If-None-Match: *``) and update, ranged/streamed GET, list with prefix, HEAD with ETag. It
lacks ListMultipartUploads/AbortMultipartUpload, needed to clear uploads orphaned when the
server died mid-upload: ``multipart.py`` makes those two SigV4-signed calls itself.
A ``file://`` store does not go through obstore's LocalStore, which follows links (and stops a
listing at one non-UTF-8 name): ``localfs.py`` gives the same layout and semantics without
ever following a link inside the store.

API for the wiring step (all keyword-only beyond the subject; every error is in errors.py)::

    target = parse_target(url, endpoint=None, region=None, path_style=False)  # OffsiteUrlError
    creds = resolve_credentials(os.environ)        # AWS_* variables or the credentials file
    store = Store(target, credentials=creds, retry=RetryPolicy(attempts=5, first_delay=1.0,
                  max_delay=30.0, request_timeout=60.0, sleep=time.sleep),
                  part_size=8 MiB, max_concurrency=4)
    store = Store.from_url(url, environ=None, endpoint=None, region=None, path_style=False,
                           retry=None)             # the two lines above in one
    store.upload(path, lease=lease, name=None, recipients=(), origin=None) -> Uploaded(name,
                        size, sha256, etag, encrypted, attempts, source_sha256)
    store.confirm(name, deep=False) -> Confirmation(name, confirmed, size, sha256, reason)
    store.list(encrypted_only=False) -> Listing(
        objects=(OffsiteObject(name, size, modified, encrypted, confirmed, reason, record), ...),
        problems=(ListProblem(key, reason), ...))
    store.download(name, dest, identities=(), identity_source="...",
                   encrypted_only=False) -> Downloaded(name, path, size, sha256, decrypted)
    store.delete(name, lease=lease)
    store.abort_orphaned_uploads(lease=lease) -> int     # with no upload of this store running
    parse_recipients(["age1..."]) -> recipients  # OffsiteKeyError
    load_identities(Path) -> identities          # OffsiteKeyError
    lease = Lease(store, ttl=300.0, owner=None)   # owner: LeaseOwner.this_process()
    lease.acquire() -> LeaseVerdict(writable, holder, generation, expires_in, message)
    lease.renew() -> LeaseVerdict                # OffsiteLeaseLostError when taken over
    lease.release(); lease.require_writable()    # OffsiteLeaseHeldError naming the holder
    lease.store_now() -> datetime                # the store's clock (a probe's Last-Modified)
    lease.valid_for -> seconds this sidecar may still write

Every write (upload, delete, abort_orphaned_uploads) takes the prefix's Lease and raises
OffsiteLeaseHeldError unless this sidecar holds it at that moment: a second sidecar on the
same prefix can list, confirm and download, never upload or prune. A sidecar killed without
releasing holds its lease until the TTL runs out (on the store's clock); its successor, a new
process with a new lease id, is read-only until then. The holder renews at a third of the TTL
(the wiring's job, e.g. before each upload and on a timer during a long one).

Errors: OffsiteUnavailableError (transient, after the retries: the upload stays pending),
OffsiteRequestError (refused: permissions, bucket), OffsiteObjectNotFoundError,
OffsiteObjectCorruptError (truncated, swapped, tampered, no record: nothing written locally),
OffsiteDecryptError (wrong or missing identity: nothing written), OffsiteKeyError,
OffsiteUrlError, OffsiteCredentialsError, OffsiteLeaseHeldError, OffsiteLeaseLostError,
OffsiteUnsafeEntryError (a link inside a ``file://`` store: never followed, see ``localfs.py``),
OffsitePlaintextError (``encrypted_only``: the config encrypts, the object is plaintext).

What "offsite" means: an object counts as offsite only when ``confirm`` says so: its checksum
record (written after the object completed, holding the SHA-256 and size of the stored bytes,
the ETag the store gave it and the SHA-256 of the local archive uploaded, see ``record.py``)
exists and the object's size and ETag match
it; ``deep=True`` also re-hashes the stored bytes. Pending uploads are derived from the bucket:
a local archive is offsite only when the object of its name (``+ .age`` when encrypting) is
confirmed and its record's ``source_sha256`` is the local archive's (the wiring compares). Encrypted
objects are ``<name>.tar.gz.age``; recipients (public keys) are enough to upload. The lease's
rule against clock skew is in ``lease.py``. Secrets never reach a message, log or ``repr``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backup_sidecar.offsite.crypto import load_identities, parse_recipients
    from backup_sidecar.offsite.download import Downloaded
    from backup_sidecar.offsite.lease import Lease, LeaseOwner, LeaseVerdict
    from backup_sidecar.offsite.record import Origin, Record
    from backup_sidecar.offsite.results import (
        Confirmation,
        Listing,
        ListProblem,
        OffsiteObject,
        Uploaded,
    )
    from backup_sidecar.offsite.retry import RetryPolicy
    from backup_sidecar.offsite.store import Store
    from backup_sidecar.offsite.target import (
        OffsiteTarget,
        S3Credentials,
        parse_target,
        resolve_credentials,
    )

#: Each name's module, imported on first use (PEP 562): the configuration and the commands that
#: never touch a store (a backup) do not import obstore and the store's machinery.
_WHERE = {
    "load_identities": "crypto", "parse_recipients": "crypto", "Downloaded": "download",
    "Lease": "lease", "LeaseOwner": "lease", "LeaseVerdict": "lease", "Origin": "record",
    "Record": "record", "Confirmation": "results", "Listing": "results",
    "ListProblem": "results", "OffsiteObject": "results", "Uploaded": "results",
    "RetryPolicy": "retry", "Store": "store", "OffsiteTarget": "target",
    "S3Credentials": "target", "parse_target": "target", "resolve_credentials": "target",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "Confirmation",
    "Downloaded",
    "Lease",
    "LeaseOwner",
    "LeaseVerdict",
    "ListProblem",
    "Listing",
    "OffsiteObject",
    "OffsiteTarget",
    "Origin",
    "Record",
    "RetryPolicy",
    "S3Credentials",
    "Store",
    "Uploaded",
    "load_identities",
    "parse_recipients",
    "parse_target",
    "resolve_credentials",
]
