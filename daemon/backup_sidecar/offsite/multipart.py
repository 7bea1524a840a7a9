"""Find and abort unfinished S3 multipart uploads (the two calls obstore does not expose).

obstore aborts a failed multipart upload itself, but when the server dies mid-upload the abort
cannot reach it either, and the parts stay (invisible, billed) until someone aborts them. These
are ListMultipartUploads and AbortMultipartUpload, signed with AWS Signature V4 (the published
algorithm: hmac/hashlib over a canonical request). The lease makes the sidecar the only writer
of its prefix, so any unfinished upload there that it is not running itself is an orphan.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

from backup_sidecar.errors import S3RequestFailedError
from backup_sidecar.offsite.target import OffsiteTarget, S3Credentials

_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_MAX_BODY = 8 * 1024 * 1024


@dataclass(frozen=True)
class PendingUpload:
    key: str
    upload_id: str
    initiated: str


class MultipartAdmin:
    """The two multipart calls for one bucket, with the target's endpoint and addressing."""

    def __init__(
        self, target: OffsiteTarget, credentials: S3Credentials | None, *, timeout: float
    ) -> None:
        endpoint = target.endpoint or f"https://s3.{target.region}.amazonaws.com"
        parts = urlsplit(endpoint)
        self._https = parts.scheme == "https"
        self._base_path = parts.path.rstrip("/")
        if target.path_style:
            self._host = parts.netloc
            self._base_path += f"/{target.bucket}"
        else:
            self._host = f"{target.bucket}.{parts.netloc}"
        self._target = target
        self._credentials = credentials
        self._timeout = timeout

    def list_pending(self, prefix: str) -> list[PendingUpload]:
        """Every unfinished multipart upload whose key starts with ``prefix`` (all pages)."""
        found: list[PendingUpload] = []
        query = {"uploads": "", "prefix": prefix}
        while True:
            root = self._xml("GET", "/", query)
            for upload in root.iter(f"{_NS}Upload"):
                key = upload.findtext(f"{_NS}Key")
                upload_id = upload.findtext(f"{_NS}UploadId")
                if key and upload_id:
                    found.append(
                        PendingUpload(key, upload_id, upload.findtext(f"{_NS}Initiated") or "")
                    )
            if root.findtext(f"{_NS}IsTruncated") != "true":
                return found
            query = {
                "uploads": "",
                "prefix": prefix,
                "key-marker": root.findtext(f"{_NS}NextKeyMarker") or "",
                "upload-id-marker": root.findtext(f"{_NS}NextUploadIdMarker") or "",
            }

    def abort(self, upload: PendingUpload) -> None:
        """Abort one upload; one already gone (404 NoSuchUpload) counts as aborted."""
        try:
            self._request("DELETE", "/" + upload.key, {"uploadId": upload.upload_id})
        except S3RequestFailedError as exc:
            if exc.status != 404:
                raise

    def _xml(self, method: str, path: str, query: dict[str, str]) -> ET.Element:
        body = self._request(method, path, query)
        try:
            return ET.fromstring(body)  # noqa: S314 - the bucket's own listing, size-capped
        except ET.ParseError as exc:
            raise S3RequestFailedError(0, f"unreadable listing from the server: {exc}") from None

    def _request(self, method: str, path: str, query: dict[str, str]) -> bytes:
        uri = self._base_path + quote(path, safe="/-_.~")
        canonical_query = "&".join(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items())
        )
        headers = self._sign(method, uri, canonical_query, datetime.now(UTC))
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, timeout=self._timeout)
        try:
            conn.request(method, f"{uri}?{canonical_query}", headers=headers)
            response = conn.getresponse()
            body = response.read(_MAX_BODY + 1)
        except OSError as exc:
            raise S3RequestFailedError(0, f"{type(exc).__name__}: {exc}") from None
        finally:
            conn.close()
        if len(body) > _MAX_BODY:
            raise S3RequestFailedError(response.status, "answer too large")
        if not 200 <= response.status < 300:
            raise S3RequestFailedError(response.status, _error_code(body))
        return body

    def _sign(self, method: str, uri: str, query: str, now: datetime) -> dict[str, str]:
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        headers = {
            "host": self._host,
            "x-amz-content-sha256": _EMPTY_SHA256,
            "x-amz-date": amz_date,
        }
        creds = self._credentials
        if creds is None:
            return headers
        if creds.session_token:
            headers["x-amz-security-token"] = creds.session_token
        signed = ";".join(sorted(headers))
        canonical = "\n".join(
            [
                method,
                uri,
                query,
                "".join(f"{k}:{headers[k].strip()}\n" for k in sorted(headers)),
                signed,
                _EMPTY_SHA256,
            ]
        )
        scope = f"{amz_date[:8]}/{self._target.region}/s3/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        key = ("AWS4" + creds.secret_access_key).encode()
        for part in (amz_date[:8], self._target.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={creds.access_key_id}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )
        return headers


def _error_code(body: bytes) -> str:
    try:
        root = ET.fromstring(body)  # noqa: S314 - an S3 error document, size-capped
    except ET.ParseError:
        return "no error document"
    return root.findtext("Code") or root.findtext(f"{_NS}Code") or "no error code"
