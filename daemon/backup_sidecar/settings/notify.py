"""The `notify` section: apprise URLs that get a message when something goes wrong and when it
recovers, a healthchecks.io-style heartbeat URL, and which events are sent.

The URLs usually hold secrets (tokens, passwords), so they are `SecretStr`: never printed,
logged or echoed in an error (a bad one is named by its index and scheme). They may come from
the YAML file or, better, from the environment: ``SIDECAR_NOTIFY__URLS='["ntfy://..."]'`` (a
JSON list) and ``SIDECAR_NOTIFY__HEARTBEAT_URL=https://hc-ping.com/<uuid>``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, field_validator

from backup_sidecar.errors import KeyedValueError
from backup_sidecar.settings.apprise_schemes import APPRISE_SCHEMES

_SCHEME = re.compile(r"([a-z][a-z0-9+.-]*)://\S+", re.IGNORECASE)


def url_scheme(url: str) -> str:
    """The scheme of a URL, the one part of it that may be shown (never its secrets)."""
    return url.partition("://")[0].lower() if "://" in url else "?"


def _one_is_a_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class NotifyEvents(BaseModel):
    """Which conditions send a message (each with its "recovered" message); all on by default."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    backup_failed: bool = True
    backup_overdue: bool = True
    drill_failed: bool = True
    offsite_lagging: bool = True
    database_unhealthy: bool = True

    def enabled(self, event: str) -> bool:
        """Whether ``event`` is sent (an event this section does not list, such as one another
        part of the daemon raises, is)."""
        return bool(getattr(self, event, True))


class NotifyConfig(BaseModel):
    """Where notifications and heartbeat pings go; empty (the default) sends nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    urls: Annotated[list[SecretStr], BeforeValidator(_one_is_a_list)] = Field(default_factory=list)
    heartbeat_url: SecretStr | None = None
    events: NotifyEvents = Field(default_factory=NotifyEvents)

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: list[SecretStr]) -> list[SecretStr]:
        for i, url in enumerate(value):
            text = url.get_secret_value().strip()
            if not _SCHEME.fullmatch(text):
                raise KeyedValueError(
                    str(i), "is not a URL like scheme://... (apprise URL; value not shown)"
                )
            if (scheme := url_scheme(text)) not in APPRISE_SCHEMES:
                raise KeyedValueError(
                    str(i),
                    f"apprise knows no {scheme!r} scheme (its URLs: "
                    "https://github.com/caronc/apprise/wiki; value not shown)",
                )
        return value

    @field_validator("heartbeat_url")
    @classmethod
    def _heartbeat(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            text = value.get_secret_value().strip()
            if url_scheme(text) not in {"http", "https"} or not _SCHEME.fullmatch(text):
                raise ValueError("must be an http:// or https:// URL (value not shown)")
        return value

    @property
    def active(self) -> bool:
        return bool(self.urls) or self.heartbeat_url is not None

    @property
    def summary(self) -> str:
        """What `config check` prints: the URLs' schemes, never the URLs."""
        schemes = ", ".join(url_scheme(u.get_secret_value()) for u in self.urls)
        urls = f"{len(self.urls)} URL(s) ({schemes})" if self.urls else "no URL"
        off = [name for name, on in self.events.model_dump().items() if not on]
        events = f", events off: {', '.join(off)}" if off else ""
        beat = "on" if self.heartbeat_url is not None else "off"
        return f"{urls}, heartbeat {beat}{events}"
