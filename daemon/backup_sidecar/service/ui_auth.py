"""Who may use the web page, and which POSTs came from it.

A client proves itself with the bearer token (``Authorization: Bearer ...``) or basic auth
checked against a scrypt hash (``scrypt$n$r$p$salt$hash``, base64); basic auth with the token
as the password (user ``ui.user``) passes too, so a browser, which can send no bearer header,
logs in at its own password prompt. Both secrets come from the
environment variables the `ui` section names, never from the YAML. Every action form carries a
CSRF token derived from a secret made at start: a page of another site cannot read it, so its
forged POST is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from backup_sidecar.errors import ConfigError
from backup_sidecar.settings.ui import UiConfig

#: scrypt cost: 2**14 rounds, 16 MiB of memory, well under 0.1 s per check.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
#: How many passed Authorization values are remembered (then forgotten all at once).
MAX_REMEMBERED = 64
#: How many password checks (scrypt, 16 MiB each) may run at once; a request beyond them is
#: answered "busy" at once without hashing, so a flood of guesses cannot exhaust memory or CPU.
MAX_CHECKS = 2

#: What check() says of a credential: it passes, it does not, or no check slot was free.
Verdict = Literal["ok", "denied", "busy"]


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024)


def hash_password(password: str) -> str:
    """The value to put in the variable `ui.password_hash_env` names."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


@dataclass(frozen=True)
class PasswordHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, encoded: str) -> PasswordHash:
        """ValueError when ``encoded`` is not what hash_password makes."""
        parts = encoded.strip().split("$")
        if len(parts) != 6 or parts[0] != "scrypt":
            raise ValueError(
                "is not a scrypt$n$r$p$salt$hash value (make one with config hash-password)"
            )
        try:
            n, r, p = (int(x) for x in parts[1:4])
            salt, digest = base64.b64decode(parts[4]), base64.b64decode(parts[5])
        except (ValueError, binascii.Error):
            raise ValueError("has a malformed number or base64 field") from None
        if n < 2 or n & (n - 1) or n > 2**20 or not 1 <= r <= 32 or not 1 <= p <= 16:
            raise ValueError("has scrypt parameters out of range")
        return cls(n=n, r=r, p=p, salt=salt, digest=digest)

    def matches(self, password: str) -> bool:
        return hmac.compare_digest(
            _scrypt(password, self.salt, self.n, self.r, self.p), self.digest
        )


class Gate:
    """Checks the Authorization header of each request and the CSRF token of each action."""

    def __init__(self, *, token: str | None, user: str, password: PasswordHash | None) -> None:
        self._token = token
        self._user = user
        self._password = password
        self._csrf_secret = secrets.token_bytes(32)
        #: Keyed digests of Authorization values that passed the scrypt check: a browser sends
        #: its basic auth with every request, and one check costs 0.05-0.2 CPU-s. A wrong
        #: password is never remembered, so each guess still pays the whole check.
        self._passed: set[bytes] = set()
        self._passed_lock = threading.Lock()
        self._checks = threading.BoundedSemaphore(MAX_CHECKS)
        #: The checks run on these threads only: scrypt's 16 MiB blocks stay in their malloc
        #: arenas instead of one arena per request thread keeping its last block.
        self._checkers = ThreadPoolExecutor(MAX_CHECKS, thread_name_prefix="ui-password-check")

    @classmethod
    def from_config(cls, cfg: UiConfig, environ: Mapping[str, str]) -> Gate:
        """ConfigError naming the variable when a named one is unset, empty or malformed."""
        token = password = None
        if cfg.token_env is not None:
            token = environ.get(cfg.token_env, "")
            if len(token) < 16:
                unset = "is unset; it " if cfg.token_env not in environ else ""
                reason = f"{unset}needs a token of 16+ chars"
                raise ConfigError(f"environment {cfg.token_env}", "ui.token_env", reason)
        if cfg.password_hash_env is not None:
            if cfg.password_hash_env not in environ:
                reason = "is unset; it needs a hash (make one with config hash-password)"
                raise ConfigError(
                    f"environment {cfg.password_hash_env}", "ui.password_hash_env", reason
                )
            try:
                password = PasswordHash.parse(environ.get(cfg.password_hash_env, ""))
            except ValueError as exc:
                raise ConfigError(
                    f"environment {cfg.password_hash_env}", "ui.password_hash_env", str(exc)
                ) from None
        return cls(token=token, user=cfg.user, password=password)

    @property
    def open(self) -> bool:
        """True when no credential is asked (loopback only, refused elsewhere at load)."""
        return self._token is None and self._password is None

    @property
    def basic(self) -> bool:
        """Whether a browser's basic auth can pass (the password, or the token as one)."""
        return self._password is not None or self._token is not None

    def allows(self, authorization: str | None) -> bool:
        return self.check(authorization) == "ok"

    def check(self, authorization: str | None) -> Verdict:
        """Whether the credential passes; "busy" when a password check is due and every check
        slot is taken (a credential that passed before needs no slot)."""
        if self.open:
            return "ok"
        scheme, _, value = (authorization or "").strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and self._token is not None:
            ok = hmac.compare_digest(value.encode(), self._token.encode())
            return "ok" if ok else "denied"
        if scheme.lower() == "basic" and self._token is not None and self._basic_token(value):
            return "ok"
        if scheme.lower() == "basic" and self._password is not None:
            seen = hmac.new(self._csrf_secret, value.encode(), hashlib.sha256).digest()
            with self._passed_lock:
                if seen in self._passed:
                    return "ok"
            if not self._checks.acquire(blocking=False):
                return "busy"
            try:
                if not self._checkers.submit(self._basic_ok, value).result():
                    return "denied"
            finally:
                self._checks.release()
            with self._passed_lock:
                if len(self._passed) >= MAX_REMEMBERED:
                    self._passed.clear()
                self._passed.add(seen)
            return "ok"
        return "denied"

    def _basic_token(self, value: str) -> bool:
        """Basic auth of ``ui.user`` with the token as its password."""
        assert self._token is not None
        given = _user_password(value)
        return given is not None and all(
            hmac.compare_digest(a.encode(), b.encode())
            for a, b in zip(given, (self._user, self._token), strict=True)
        )

    def _basic_ok(self, value: str) -> bool:
        assert self._password is not None
        given = _user_password(value)
        if given is None:
            return False
        user_ok = hmac.compare_digest(given[0].encode(), self._user.encode())
        return self._password.matches(given[1]) and user_ok

    def csrf_token(self) -> str:
        return hmac.new(self._csrf_secret, b"ui-action", hashlib.sha256).hexdigest()

    def csrf_ok(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.csrf_token().encode())


def _user_password(value: str) -> tuple[str, str] | None:
    """The user and password of a basic-auth value (None: malformed)."""
    try:
        user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None
