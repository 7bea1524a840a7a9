"""The offsite Store: upload, confirm, list, download and delete archives under one prefix."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from pyrage import x25519

from backup_sidecar.errors import OffsiteObjectCorruptError, OffsiteUrlError, RecordError
from backup_sidecar.offsite import record as rec
from backup_sidecar.offsite.backend import open_backend
from backup_sidecar.offsite.crypto import EncryptedChunks
from backup_sidecar.offsite.download import Downloaded, download, hash_object
from backup_sidecar.offsite.listing import list_store
from backup_sidecar.offsite.localfs import LocalFiles
from backup_sidecar.offsite.multipart import MultipartAdmin
from backup_sidecar.offsite.objects import Objects, object_fault
from backup_sidecar.offsite.pagekeys import parse_page_name
from backup_sidecar.offsite.results import Confirmation, Listing, Uploaded
from backup_sidecar.offsite.retry import RetryPolicy
from backup_sidecar.offsite.staging import remove_staging
from backup_sidecar.offsite.target import (
    OffsiteTarget,
    S3Credentials,
    parse_target,
    resolve_credentials,
)
from backup_sidecar.offsite.transfer import (
    HashingChunks,
    HashingFile,
    file_chunks,
    open_source,
    until,
)

if TYPE_CHECKING:
    from obstore.store import ObjectStore

    from backup_sidecar.offsite.lease import Lease

PART_SIZE = 8 * 1024 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024


class Store:
    """One offsite prefix (``s3://BUCKET/PREFIX`` or ``file:///PATH``), one retry policy."""

    def __init__(
        self,
        target: OffsiteTarget,
        *,
        credentials: S3Credentials | None = None,
        retry: RetryPolicy | None = None,
        part_size: int = PART_SIZE,
        max_concurrency: int = 4,
        backend: ObjectStore | None = None,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size {part_size} under S3's minimum {MIN_PART_SIZE}")
        self.target = target
        self.retry = retry or RetryPolicy()
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        local = LocalFiles(target.path, url=target.url) if target.path is not None else None
        self.objects = Objects(
            backend or open_backend(target, credentials, self.retry),
            url=target.url,
            retry=self.retry,
            local=local,
        )
        self._admin = (
            MultipartAdmin(target, credentials, timeout=self.retry.request_timeout)
            if target.scheme == "s3"
            else None
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        environ: Mapping[str, str] | None = None,
        endpoint: str | None = None,
        region: str | None = None,
        path_style: bool = False,
        retry: RetryPolicy | None = None,
    ) -> Store:
        """A store for ``url`` with credentials from ``environ`` (default ``os.environ``)."""
        target = parse_target(url, endpoint=endpoint, region=region, path_style=path_style)
        creds = resolve_credentials(os.environ if environ is None else environ)
        return cls(target, credentials=creds if target.scheme == "s3" else None, retry=retry)

    @property
    def url(self) -> str:
        return self.target.url

    def key(self, name: str) -> str:
        if not rec.valid_name(name) and parse_page_name(name) is None:  # an archive, or pages/
            raise OffsiteUrlError(self.url, f"invalid object name {name!r}")
        return rec.join(self.target.prefix, name)

    def record_key(self, name: str) -> str:
        return rec.join(self.target.prefix, rec.RECORD_DIR, f"{name}.json")

    # -- upload ------------------------------------------------------------------------------

    def upload(
        self,
        path: Path,
        *,
        lease: Lease,
        name: str | None = None,
        recipients: Sequence[x25519.Recipient] = (),
        origin: rec.Origin | None = None,
        cancel: Callable[[], bool] | None = None,
        vet: Callable[[str], None] | None = None,
    ) -> Uploaded:
        """Stream ``path`` to ``name`` (default: its file name, plus ``.age`` when encrypting to
        ``recipients``), check the stored size, write the checksum record (with ``origin``).
        Retries restart from byte 0, unfinished uploads of it aborted. Only ``lease``'s holder
        writes (checked first and before the record); ``cancel()`` true abandons (``until``).
        ``vet(source_sha256)`` (the SHA-256 of the local bytes sent) runs before the record
        is written: raising leaves the object unconfirmed."""
        encrypted = bool(recipients)
        name = name or path.name + (rec.ENCRYPTED_SUFFIX if encrypted else "")
        key = self.key(name)
        self._require_writable(lease)
        self.objects.delete(self.record_key(name))  # the old record no longer vouches
        self._abort_pending(key, exact=True)
        attempts = 0

        def attempt() -> tuple[HashingChunks | HashingFile, HashingFile]:
            nonlocal attempts
            attempts += 1
            with open_source(path) as opened:
                src = HashingFile(opened)
                with self._payload(src, recipients) as chunks:
                    # plaintext: the object is the source's bytes, hashed once (by ``src``)
                    hashed = HashingChunks(chunks) if encrypted else None
                    self.objects.put_stream(
                        key,
                        iter(until(chunks if hashed is None else hashed, cancel, self.url, name)),
                        chunk_size=self.part_size,
                        max_concurrency=self.max_concurrency,
                    )
                src.drain()
            return (src if hashed is None else hashed), src

        hashed, source = self.objects.call(f"upload {key}", attempt)
        meta = self.objects.head(key)
        if meta is None or meta.size != hashed.size:
            got = "nothing" if meta is None else f"{meta.size} bytes"
            raise OffsiteObjectCorruptError(
                name, f"the store holds {got} after {hashed.size} bytes were sent"
            )
        record = rec.Record(
            name=name,
            size=hashed.size,
            sha256=hashed.hexdigest(),
            etag=meta.etag,
            encrypted=encrypted,
            source_size=source.size,
            source_sha256=source.hexdigest(),
            origin=origin,
        )
        if vet is not None:
            vet(source.hexdigest())
        self._require_writable(lease)
        self.objects.put(self.record_key(name), record.to_json())
        self._abort_pending(key, exact=True)
        return Uploaded(
            name, record.size, record.sha256, record.etag, encrypted, attempts, source.hexdigest()
        )

    @contextlib.contextmanager
    def _payload(
        self, src: HashingFile, recipients: Sequence[x25519.Recipient]
    ) -> Iterator[Iterator[bytes]]:
        if not recipients:
            yield file_chunks(src)
            return
        with EncryptedChunks(cast("BinaryIO", src), recipients) as chunks:
            yield iter(chunks)

    def abort_orphaned_uploads(self, *, lease: Lease) -> int:
        """Abort every unfinished upload under the prefix (S3 multipart uploads; a file://
        store's staging files); how many. Only the holder of ``lease``, with no upload of
        this store running."""
        self._require_writable(lease)
        return self._abort_pending(f"{self.target.prefix}/" if self.target.prefix else "")

    def _abort_pending(self, key_prefix: str, *, exact: bool = False) -> int:
        """Abort the unfinished uploads of keys starting with ``key_prefix`` (``exact``: of
        that one key only, never of a longer name such as its ``.age`` twin)."""

        def wanted(key: str) -> bool:
            return key == key_prefix if exact else key.startswith(key_prefix)

        admin = self._admin
        if admin is None:
            assert self.target.path is not None
            return remove_staging(self.target.path, wanted)

        def go() -> int:
            pending = [u for u in admin.list_pending(key_prefix) if wanted(u.key)]
            for upload in pending:
                admin.abort(upload)
            return len(pending)

        return self.objects.call(f"abort unfinished uploads of {key_prefix}", go)

    # -- confirm, list, delete ---------------------------------------------------------------

    def read_record(self, name: str) -> rec.Record | None:
        """The checksum record of ``name``, None if absent; RecordError if unreadable."""
        raw = self.objects.read_small(self.record_key(name), rec.RECORD_MAX_BYTES)
        return None if raw is None else rec.parse_record(name, raw)

    def confirm(self, name: str, *, deep: bool = False) -> Confirmation:
        """Whether ``name`` is offsite: its record, and the object matching it."""
        key = self.key(name)
        try:
            record = self.read_record(name)
        except RecordError as exc:
            return Confirmation(name, False, None, None, str(exc))
        if record is None:
            return Confirmation(name, False, None, None, "no checksum record (upload unfinished)")
        verdict = object_fault(record, self.objects.head(key))
        if verdict is None and deep:
            digest = hash_object(self, name, record)
            if digest != record.sha256:
                verdict = (
                    f"its bytes hash to {digest[:12]}..., the record says {record.sha256[:12]}..."
                )
        if verdict is not None:
            return Confirmation(name, False, record.size, record.sha256, verdict)
        return Confirmation(name, True, record.size, record.sha256, "confirmed")

    def list(self, *, encrypted_only: bool = False) -> Listing:
        """Every object under the prefix with its verdict (``listing.list_store``); with
        ``encrypted_only`` (the config encrypts) a plaintext object is never confirmed."""
        return list_store(self, encrypted_only=encrypted_only)

    def download(
        self,
        name: str,
        dest: Path,
        *,
        identities: Sequence[x25519.Identity] = (),
        identity_source: str = "(none given)",
        encrypted_only: bool = False,
        cancel: Callable[[], bool] | None = None,
    ) -> Downloaded:
        """Fetch ``name`` into ``dest`` checked against its record (and decrypted if ``.age``);
        with ``encrypted_only`` (the config encrypts) a plaintext object is refused (an
        attacker's object with a forged record); ``cancel()`` true abandons it, however stalled
        the endpoint; see ``offsite.download.download``."""
        return download(
            self,
            name,
            dest,
            identities=identities,
            identity_source=identity_source,
            encrypted_only=encrypted_only,
            cancel=cancel,
        )

    def delete(self, name: str, *, lease: Lease) -> None:
        """Delete ``name`` and its record (the record first: a half-done delete leaves an
        unconfirmed object, never a record vouching for nothing). Absent is fine. Only the
        holder of ``lease``: a read-only sidecar never prunes another's archives."""
        key = self.key(name)
        self._require_writable(lease)
        self.objects.delete(self.record_key(name))
        self.objects.delete(key)

    def _require_writable(self, lease: Lease) -> None:
        """OffsiteLeaseHeldError unless ``lease`` is this prefix's and held right now."""
        if lease.url != self.url or lease.prefix != self.target.prefix:
            raise ValueError(f"the lease on {lease.url} does not cover {self.url}")
        lease.require_writable()
