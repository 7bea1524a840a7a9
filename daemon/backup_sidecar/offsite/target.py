"""Where offsite copies go: the URL, the S3 options and the credentials, as plain frozen values.

Credentials come from the standard AWS environment variables or a shared credentials file
(``AWS_SHARED_CREDENTIALS_FILE``, else ``~/.aws/credentials``; profile ``AWS_PROFILE``, else
``default``). Secrets are kept out of every ``repr`` and message.
"""

from __future__ import annotations

import configparser
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import unquote, urlsplit

from backup_sidecar.errors import OffsiteCredentialsError, OffsiteUrlError

# S3's own bucket rule (3-63 of a-z 0-9 . -, starting and ending with a letter or digit).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class S3Credentials:
    """An access key pair (and session token); only the key id ever shows."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    source: str = "environment"


@dataclass(frozen=True)
class OffsiteTarget:
    """A parsed offsite URL. ``prefix`` has no leading or trailing slash ('' for the root)."""

    url: str
    scheme: Literal["s3", "file"]
    bucket: str = ""
    prefix: str = ""
    path: Path | None = None
    endpoint: str | None = None
    region: str = "us-east-1"
    path_style: bool = False


def parse_target(
    url: str, *, endpoint: str | None = None, region: str | None = None, path_style: bool = False
) -> OffsiteTarget:
    """``s3://BUCKET[/PREFIX]`` or ``file:///ABSOLUTE/PATH``; anything else is one clear error."""
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise OffsiteUrlError(url, "no query or fragment allowed")
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise OffsiteUrlError(url, "a file URL names a local path: file:///PATH")
        path = PurePosixPath(unquote(parts.path))
        if not path.is_absolute() or ".." in path.parts or path == PurePosixPath("/"):
            raise OffsiteUrlError(url, "the path must be absolute, not /, without '..'")
        return OffsiteTarget(url=url, scheme="file", path=Path(path))
    if parts.scheme != "s3":
        raise OffsiteUrlError(url, "the scheme must be s3:// or file://")
    if "@" in parts.netloc:
        raise OffsiteUrlError(url, "credentials never go in the URL (use the AWS variables)")
    if not _BUCKET.match(parts.netloc):
        raise OffsiteUrlError(url, f"bucket name {parts.netloc!r} is not a valid S3 bucket name")
    prefix = unquote(parts.path).strip("/")
    if any(p in ("", ".", "..") for p in prefix.split("/")) and prefix:
        raise OffsiteUrlError(url, "the prefix has an empty, '.' or '..' segment")
    return OffsiteTarget(
        url=url,
        scheme="s3",
        bucket=parts.netloc,
        prefix=prefix,
        endpoint=endpoint,
        region=region or "us-east-1",
        path_style=path_style,
    )


def resolve_credentials(environ: Mapping[str, str]) -> S3Credentials | None:
    """The environment's key pair if set, else the shared credentials file's profile, else None
    (a store that needs none: a public bucket, or an instance role the client finds itself)."""
    key_id = environ.get("AWS_ACCESS_KEY_ID", "")
    secret = environ.get("AWS_SECRET_ACCESS_KEY", "")
    if key_id or secret:
        if not (key_id and secret):
            raise OffsiteCredentialsError(
                "the environment",
                "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither",
            )
        return S3Credentials(key_id, secret, environ.get("AWS_SESSION_TOKEN") or None)
    explicit = environ.get("AWS_SHARED_CREDENTIALS_FILE")
    path = (
        Path(explicit)
        if explicit
        else Path(environ.get("HOME", "/nonexistent")) / ".aws/credentials"
    )
    if not path.is_file():
        if explicit:
            raise OffsiteCredentialsError(str(path), "the file does not exist")
        return None
    return _read_credentials_file(path, environ.get("AWS_PROFILE") or "default")


def _read_credentials_file(path: Path, profile: str) -> S3Credentials:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise OffsiteCredentialsError(str(path), f"unreadable: {type(exc).__name__}") from None
    if not parser.has_section(profile):
        raise OffsiteCredentialsError(str(path), f"no profile [{profile}]")
    section = parser[profile]
    key_id = section.get("aws_access_key_id", "").strip()
    secret = section.get("aws_secret_access_key", "").strip()
    if not (key_id and secret):
        raise OffsiteCredentialsError(
            str(path), f"profile [{profile}] lacks aws_access_key_id or aws_secret_access_key"
        )
    token = section.get("aws_session_token", "").strip() or None
    return S3Credentials(key_id, secret, token, source=f"{path} [{profile}]")
