"""The `ui` section: the daemon's web page (off by default).

Secrets never go here: the section names the environment variables that hold the bearer token
(`token_env`) and the basic-auth password hash (`password_hash_env`, made with
``backup-sidecar config hash-password``). Listening beyond the loopback interface needs one of them.
"""

from __future__ import annotations

import ipaddress
import re

from pydantic import BaseModel, ConfigDict, Field, model_validator

from backup_sidecar.errors import KeyedValueError

DEFAULT_LISTEN = "127.0.0.1:8089"
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def split_listen(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` as (host, port); ValueError naming what is wrong."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:8089 or [::1]:8089)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class UiConfig(BaseModel):
    """The web page: where it listens and how a client proves who it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = False
    listen: str = Field(default=DEFAULT_LISTEN, min_length=1)
    #: The environment variable holding the bearer token (``Authorization: Bearer ...``).
    token_env: str | None = Field(default=None, min_length=1)
    #: The basic-auth user name, and the variable holding its password hash.
    user: str = Field(default="admin", min_length=1)
    password_hash_env: str | None = Field(default=None, min_length=1)
    #: Host header values a reverse proxy sends (``name`` or ``name:port``), besides the
    #: listen address's own; any other Host is refused (DNS rebinding).
    allowed_hosts: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _names(self) -> UiConfig:
        if ":" in self.user:
            raise KeyedValueError(
                "user", f"{self.user!r} contains ':', which basic auth cannot send in a user name"
            )
        for key in ("token_env", "password_hash_env"):
            name = getattr(self, key)
            if name is not None and not _VARIABLE.fullmatch(name):
                raise KeyedValueError(
                    key, f"{name!r} is not an environment variable name (A-Z, a-z, 0-9, _)"
                )
        return self

    @model_validator(mode="after")
    def _auth_off_loopback(self) -> UiConfig:
        try:
            host, _ = split_listen(self.listen)
        except ValueError as exc:
            raise KeyedValueError("listen", str(exc)) from None
        if self.enabled and not self.authenticated and not is_loopback(host):
            raise KeyedValueError(
                "listen",
                f"{self.listen} is not a loopback address: set ui.token_env or "
                "ui.password_hash_env so the page asks who is there",
            )
        return self

    @property
    def authenticated(self) -> bool:
        """True when the page asks for a token or a password."""
        return self.token_env is not None or self.password_hash_env is not None

    @property
    def address(self) -> tuple[str, int]:
        return split_listen(self.listen)
