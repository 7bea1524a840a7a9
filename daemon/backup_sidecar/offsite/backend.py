"""The obstore client for a target: S3Store for ``s3://``, LocalStore for ``file://``.

Both give the same calls with the same semantics: ``put`` publishes atomically (S3 multipart
complete; local temp file + rename), ``mode="create"`` is a conditional create (S3
``If-None-Match: *``; local O_EXCL/link), ``list`` with a prefix, ``head`` (size, ETag,
last-modified), ranged and streamed ``get``, ``delete``. Requests carry their payload's SHA-256
(SigV4 signed payload, plus ``x-amz-checksum-sha256``), which the server checks.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from obstore.store import LocalStore, S3Store

from backup_sidecar.offsite.retry import RetryPolicy
from backup_sidecar.offsite.target import OffsiteTarget, S3Credentials

if TYPE_CHECKING:
    from obstore.store import ObjectStore


def open_backend(
    target: OffsiteTarget, credentials: S3Credentials | None, retry: RetryPolicy
) -> ObjectStore:
    """A client for ``target``. obstore's own retries stay small (one failed part is retried
    without restarting a whole upload); the store's RetryPolicy governs the rest."""
    if target.scheme == "file":
        assert target.path is not None
        return LocalStore(prefix=target.path, mkdir=True)
    secrets: dict[str, str] = {}
    if credentials is not None:
        secrets["access_key_id"] = credentials.access_key_id
        secrets["secret_access_key"] = credentials.secret_access_key
        if credentials.session_token:
            secrets["session_token"] = credentials.session_token
    endpoint = {"endpoint": target.endpoint} if target.endpoint else {}
    first = timedelta(seconds=max(retry.first_delay, 0.001))
    return S3Store(
        target.bucket,
        region=target.region,
        virtual_hosted_style_request=not target.path_style,
        checksum_algorithm="sha256",
        client_options={
            "allow_http": bool(target.endpoint and target.endpoint.startswith("http://")),
            "timeout": timedelta(seconds=retry.request_timeout),
            "connect_timeout": timedelta(seconds=min(retry.request_timeout, 10.0)),
        },
        retry_config={
            "max_retries": min(2, retry.attempts - 1),
            "retry_timeout": timedelta(seconds=retry.request_timeout),
            "backoff": {
                "init_backoff": first,
                "max_backoff": max(first, timedelta(seconds=retry.max_delay)),
                "base": 2,
            },
        },
        **endpoint,  # type: ignore[arg-type]
        **secrets,  # type: ignore[arg-type]
    )
