"""Download an offsite object into a local file: checked against its record, decrypted when it
is age ciphertext, published atomically; any fault leaves nothing behind."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyrage
from pyrage import x25519

from backup_sidecar.errors import (
    ObjectChangedError,
    OffsiteDecryptError,
    OffsiteObjectCorruptError,
    OffsiteObjectNotFoundError,
    OffsitePlaintextError,
    RecordError,
)
from backup_sidecar.offsite import record as rec
from backup_sidecar.offsite.abandon import abandonable, sleep_unless
from backup_sidecar.offsite.bucket import Bucket
from backup_sidecar.offsite.crypto import decrypt_stream
from backup_sidecar.offsite.objects import object_fault
from backup_sidecar.offsite.retry import run_with_retries
from backup_sidecar.offsite.transfer import CHUNK, HashingReader, publish_file


@dataclass(frozen=True)
class Downloaded:
    name: str
    path: Path
    size: int
    sha256: str
    decrypted: bool


def checked_record(store: Bucket, name: str) -> rec.Record:
    """The record of ``name`` with the object matching it, or the one clear error."""
    key = store.key(name)
    try:
        record = store.read_record(name)
    except RecordError as exc:
        raise OffsiteObjectCorruptError(name, str(exc)) from None
    meta = store.objects.head(key)
    if meta is None and record is None:
        raise OffsiteObjectNotFoundError(store.url, name)
    if record is None:
        raise OffsiteObjectCorruptError(name, "no checksum record (its upload never finished)")
    fault = object_fault(record, meta)
    if fault is not None:
        raise OffsiteObjectCorruptError(name, fault)
    return record


class _FailingSource(HashingReader):
    """Keep the store's own error when pyrage turns a failed read into a bare OSError."""

    failure: BaseException | None = None

    def read(self, size: int = -1, /) -> bytes:
        try:
            return super().read(size)
        except BaseException as exc:
            self.failure = exc
            raise


def download(
    store: Bucket,
    name: str,
    dest: Path,
    *,
    identities: Sequence[x25519.Identity] = (),
    identity_source: str = "(none given)",
    encrypted_only: bool = False,
    cancel: Callable[[], bool] | None = None,
) -> Downloaded:
    """Fetch ``name`` into ``dest`` (which must not exist). An ``.age`` object is decrypted
    with ``identities``; a wrong or missing identity is OffsiteDecryptError, a truncated,
    swapped or tampered object OffsiteObjectCorruptError, a plaintext one when
    ``encrypted_only`` OffsitePlaintextError; none leaves a file. Once ``cancel()`` is true
    (the daemon stops), OffsiteDownloadAbandonedError within ``abandon.POLL_S``, even while
    the endpoint stalls (``abandon.py``); nothing is left either."""
    encrypted = name.endswith(rec.ENCRYPTED_SUFFIX)
    if encrypted_only and not encrypted:
        store.key(name)  # an invalid name says so first
        raise OffsitePlaintextError(store.url, name)
    record = checked_record(store, name)
    if encrypted and not identities:
        raise OffsiteDecryptError(name, identity_source, "no identity given to decrypt it")

    def fill(out: BinaryIO) -> None:
        reader = _open(store, name, record, cancel)
        if encrypted:
            _decrypt(reader, out, name, identities, identity_source, record)
            reader.drain()
        else:
            while chunk := reader.read(CHUNK):
                out.write(chunk)
        _check(reader, record, name)

    retry = store.objects.retry
    policy = dataclasses.replace(
        retry, sleep=sleep_unless(retry.sleep, cancel, url=store.url, name=name)
    )
    run_with_retries(
        lambda: publish_file(dest, fill),
        policy=policy,
        url=store.url,
        operation=f"download {store.key(name)}",
    )
    return Downloaded(name, dest, record.size, record.sha256, encrypted)


def hash_object(store: Bucket, name: str, record: rec.Record) -> str:
    """The SHA-256 of the stored bytes (streamed, nothing kept)."""

    def go() -> str:
        reader = _open(store, name, record)
        reader.drain()
        return reader.hexdigest()

    return store.objects.call(f"hash {store.key(name)}", go)


def _open(
    store: Bucket, name: str, record: rec.Record, cancel: Callable[[], bool] | None = None
) -> _FailingSource:
    def chunks() -> Iterable[bytes | memoryview]:
        try:
            opened = store.objects.stream(store.key(name), etag=record.etag)
        except ObjectChangedError:
            raise OffsiteObjectCorruptError(
                name, "the object was replaced since its upload (ETag differs from the record)"
            ) from None
        if opened is None:
            raise OffsiteObjectCorruptError(name, "the object is missing")
        return opened[1]

    return _FailingSource(abandonable(chunks, cancel, url=store.url, name=name))


def _decrypt(
    reader: _FailingSource,
    out: BinaryIO,
    name: str,
    identities: Sequence[x25519.Identity],
    identity_source: str,
    record: rec.Record,
) -> None:
    try:
        decrypt_stream(reader, out, identities)
    except (pyrage.DecryptError, OSError) as exc:
        if reader.failure is not None:
            raise reader.failure from None
        reader.drain()
        _check(reader, record, name)  # a damaged object says so before blaming the key
        if isinstance(exc, pyrage.DecryptError):
            raise OffsiteDecryptError(name, identity_source, str(exc)) from None
        raise OffsiteObjectCorruptError(
            name, f"its age ciphertext does not decrypt: {exc}"
        ) from None


def _check(reader: HashingReader, record: rec.Record, name: str) -> None:
    if reader.size != record.size:
        raise OffsiteObjectCorruptError(
            name, f"{reader.size} bytes arrived, the record says {record.size}"
        )
    digest = reader.hexdigest()
    if digest != record.sha256:
        raise OffsiteObjectCorruptError(
            name, f"its bytes hash to {digest[:12]}..., the record says {record.sha256[:12]}..."
        )
