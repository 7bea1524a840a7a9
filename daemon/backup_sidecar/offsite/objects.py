"""Key-level calls with the retry policy applied: what the store and the lease are built from.

Keys here are full keys (prefix included). "Not found" is an answer (None/False), not an error.
An ``s3://`` store goes through obstore; a ``file://`` one through ``localfs.LocalFiles``
(``local``), which never follows a link inside the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

import obstore
import obstore.exceptions as obx

from backup_sidecar.errors import ObjectChangedError, OffsiteRequestError
from backup_sidecar.offsite.localfs import LocalFiles, same_version
from backup_sidecar.offsite.meta import Meta
from backup_sidecar.offsite.record import Record
from backup_sidecar.offsite.retry import RetryPolicy, run_with_retries

if TYPE_CHECKING:
    from obstore import GetOptions
    from obstore.store import ObjectStore

T = TypeVar("T")
#: What a listing finds: the objects, and (key, reason) for each entry that is none.
Scan = tuple[list[Meta], list[tuple[str, str]]]
NOT_FOUND = (FileNotFoundError, obx.NotFoundError)


def _meta(raw: object) -> Meta:
    m: dict[str, object] = raw  # type: ignore[assignment]
    etag = m.get("e_tag")
    return Meta(
        key=str(m["path"]),
        size=int(m["size"]),  # type: ignore[call-overload]
        modified=m["last_modified"],  # type: ignore[arg-type]
        etag=etag if isinstance(etag, str) else None,
    )


class Objects:
    """One backend, one URL for messages, one retry policy."""

    def __init__(
        self,
        backend: ObjectStore,
        *,
        url: str,
        retry: RetryPolicy,
        local: LocalFiles | None = None,
    ) -> None:
        self.backend = backend
        self.url = url
        self.retry = retry
        self.local = local

    def call(self, operation: str, fn: Callable[[], T]) -> T:
        return run_with_retries(fn, policy=self.retry, url=self.url, operation=operation)

    def head(self, key: str) -> Meta | None:
        if self.local is not None:
            return self.local.head(key)

        def go() -> Meta | None:
            try:
                return _meta(obstore.head(self.backend, key))
            except NOT_FOUND:
                return None

        return self.call(f"head {key}", go)

    def read_small(self, key: str, limit: int) -> bytes | None:
        """The first ``limit + 1`` bytes at most (the caller refuses anything longer)."""
        if self.local is not None:
            return self.local.read_small(key, limit)

        def go() -> bytes | None:
            try:
                result = obstore.get(self.backend, key, options={"range": (0, limit + 1)})
                return bytes(result.bytes())
            except NOT_FOUND:
                return None

        return self.call(f"get {key}", go)

    def put(self, key: str, data: bytes) -> str | None:
        """Overwrite ``key``; the new ETag."""
        if self.local is not None:
            return self.local.put(key, (data,))
        result = self.call(f"put {key}", lambda: obstore.put(self.backend, key, data))
        return result["e_tag"]

    def create(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if absent (If-None-Match / O_EXCL): False if it already exists.

        A retry after a lost answer may find the key made by our own first try: the caller
        reads it back to tell (the lease does, by its random owner id)."""
        if self.local is not None:
            return self.local.put(key, (data,), create=True) is not None

        def go() -> bool:
            try:
                obstore.put(self.backend, key, data, mode="create")
            except obx.AlreadyExistsError:
                return False
            return True

        return self.call(f"create {key}", go)

    def delete(self, key: str) -> None:
        if self.local is not None:
            self.local.delete(key)
            return

        def go() -> None:
            try:
                obstore.delete(self.backend, key)
            except NOT_FOUND:
                return

        self.call(f"delete {key}", go)

    def list(self, prefix: str) -> list[Meta]:
        """Every object under ``prefix`` (recursive), all pages."""
        return self.scan(prefix)[0]

    def scan(self, prefix: str) -> Scan:
        """``list``, and (key, reason) for each entry no object can be made of (a ``file://``
        store's links, special files and non-UTF-8 names: never followed, never fatal)."""
        if self.local is not None:
            return self.local.scan(prefix)

        def go() -> list[Meta]:
            out: list[Meta] = []
            for batch in obstore.list(self.backend, prefix=prefix or None, chunk_size=1000):
                out.extend(_meta(m) for m in batch)
            return out

        return self.call(f"list {prefix or '/'}", go), []

    def stream(self, key: str, *, etag: str | None) -> tuple[Meta, Iterable[memoryview]] | None:
        """Open a GET of ``key`` (only the version ``etag`` when given, else
        ObjectChangedError); None if absent."""
        if self.local is not None:
            return self.local.stream(key, etag=etag)
        options: GetOptions | None = {"if_match": etag} if etag else None
        try:
            result = self.call(
                f"get {key}", lambda: obstore.get(self.backend, key, options=options)
            )
        except OffsiteRequestError as exc:
            if isinstance(exc.__cause__, obx.PreconditionError):
                raise ObjectChangedError(key) from None
            raise
        except NOT_FOUND:
            return None
        stream = result.stream(min_chunk_size=1024 * 1024)
        return _meta(result.meta), (memoryview(chunk) for chunk in stream)

    def put_stream(
        self, key: str, chunks: Iterable[bytes], *, chunk_size: int, max_concurrency: int
    ) -> None:
        """Write ``key`` from ``chunks`` (S3: multipart; no retry here, the caller restarts)."""
        if self.local is not None:
            self.local.put(key, chunks)
            return
        obstore.put(
            self.backend, key, chunks, chunk_size=chunk_size, max_concurrency=max_concurrency
        )


def object_fault(record: Record, meta: Meta | None) -> str | None:
    """Why the stored object is not the one the record vouches for, or None if it is."""
    if meta is None:
        return "the object is missing"
    if meta.size != record.size:
        return f"the object holds {meta.size} bytes, the record says {record.size}"
    if record.etag is None or meta.etag == record.etag:
        return None
    if not (meta.local and meta.etag is not None and same_version(record.etag, meta.etag)):
        return "the object was replaced since its upload (ETag differs from the record)"
    return None
