"""The `offsite` section: where archive copies go (an S3-compatible bucket or a directory), how
many to keep there, how stale the newest may get, and the age keys that encrypt them.

Secrets never go here: credentials come from the standard AWS environment variables or a
credentials file (``offsite.resolve_credentials``); a key that looks like one is refused
without echoing its value. The URL and the recipients are parsed by the offsite library at
load, so a bad one is a configuration error naming its key, not a failure at the first upload.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from backup_sidecar.errors import KeyedValueError, OffsiteKeyError, OffsiteUrlError
from backup_sidecar.offsite import OffsiteTarget, parse_recipients, parse_target
from backup_sidecar.settings.values import Duration, FilePath, Int, Name, at_least

#: Keys that would hold a secret: refused wherever they appear in the section.
SECRET_KEYS = frozenset(
    {
        "access_key",
        "access_key_id",
        "aws_access_key_id",
        "secret",
        "secret_key",
        "secret_access_key",
        "aws_secret_access_key",
        "session_token",
        "aws_session_token",
        "credentials",
        "password",
        "identity",
    }
)
_WHERE_SECRETS_GO = (
    "secrets never go in the configuration: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
    "(or AWS_SHARED_CREDENTIALS_FILE) in the environment, and the age identity in a file "
    "named by offsite.encryption.identity_file"
)


def _refuse_secrets(data: Any) -> Any:
    if isinstance(data, dict):
        for key in data:
            if isinstance(key, str) and key.lower() in SECRET_KEYS:
                raise KeyedValueError(key, _WHERE_SECRETS_GO)
    return data


class OffsiteEncryptionConfig(BaseModel):
    """age encryption: the `recipients` (public keys) encrypt every upload; the
    `identity_file` (the private key) is read only by what must decrypt (restore)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    recipients: list[str]
    identity_file: FilePath | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        return _refuse_secrets(data)

    @field_validator("recipients")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        try:
            parse_recipients(value)
        except OffsiteKeyError as exc:
            raise ValueError(str(exc)) from None
        return value


class OffsiteConfig(BaseModel):
    """Offsite copies: `url` is ``s3://BUCKET[/PREFIX]`` or ``file:///PATH``; `endpoint`,
    `region` and `path_style` are for ``s3://`` only; `keep` maps policies to how many
    confirmed copies to keep (default: the policy's local keep); `max_age` is how old the
    newest confirmed copy of a policy may get."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str
    endpoint: str | None = None
    region: str | None = None
    path_style: bool = False
    keep: dict[Name, Annotated[Int, Field(ge=0)]] = Field(default_factory=dict)
    max_age: Duration | None = None
    encryption: OffsiteEncryptionConfig | None = None
    #: Tries of each request before the pass fails (backoff 1s doubling, at most 30s, between).
    attempts: Int = Field(default=5, ge=1, le=20)
    #: How long the prefix's lease lasts unless renewed (renewed every third of it).
    lease_ttl: Annotated[Duration, at_least(timedelta(seconds=1), "1s")] = timedelta(minutes=5)
    #: How often the newest confirmed copy of each policy is downloaded and fully verified.
    verify_every: Annotated[Duration, at_least(timedelta(seconds=1), "1s")] = timedelta(days=1)

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        return _refuse_secrets(data)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            target = parse_target(value)
        except OffsiteUrlError as exc:
            raise ValueError(exc.reason) from None
        path = target.path
        if path is not None and path.exists() and not path.is_dir():
            raise ValueError(f"{path} exists and is not a directory")
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value[:60]!r} is not an http:// or https:// URL")
        if parts.username is not None or parts.password is not None:
            raise ValueError("credentials never go in the endpoint (use the AWS variables)")
        return value

    @model_validator(mode="after")
    def _s3_only(self) -> OffsiteConfig:
        if self.target.scheme == "file":
            for key in ("endpoint", "region"):
                if getattr(self, key) is not None:
                    raise KeyedValueError(key, "is only for s3:// urls")
            if self.path_style:
                raise KeyedValueError("path_style", "is only for s3:// urls")
        return self

    @property
    def target(self) -> OffsiteTarget:
        """The parsed URL with its S3 options."""
        return parse_target(
            self.url, endpoint=self.endpoint, region=self.region, path_style=self.path_style
        )

    def max_age_seconds(self) -> float | None:
        return None if self.max_age is None else self.max_age / timedelta(seconds=1)


def check_offsite_policies(offsite: OffsiteConfig | None, policies: Iterable[str]) -> None:
    """Every `offsite.keep` key names a policy (KeyedValueError with the key path)."""
    known = set(policies)
    for name in offsite.keep if offsite is not None else ():
        if name not in known:
            raise KeyedValueError(f"offsite.keep.{name}", "not a policy name")
