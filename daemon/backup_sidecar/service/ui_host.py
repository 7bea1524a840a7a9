"""Which `Host` and `Origin` the web page answers (DNS rebinding).

A page of another site whose name was rebound to this address reaches the page with its own
name in `Host` (and in `Origin`): only a Host naming the listen address is answered, and an
action's Origin must be exactly ``http://`` and such a Host. The names: the listen address's IP
literal (any IP literal when it listens on every interface), ``localhost`` for a loopback
listen, each at the bound port; and each `ui.allowed_hosts` entry, exactly as a reverse proxy
sends it (``name`` or ``name:port``; its Origin may then be ``https://`` too).
"""

from __future__ import annotations

import ipaddress

from backup_sidecar.settings.ui import is_loopback


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def _split(host: str) -> tuple[str, int] | None:
    """A Host header's (name, port); port 80 when absent; None when malformed."""
    if host.startswith("["):
        name, sep, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ("" if not rest else "x")
        if not sep:
            return None
    else:
        name, sep, port = host.partition(":")
        if ":" in port:
            return None
    if not name or (port and (not port.isdigit() or len(port) > 5)):
        return None
    return name, int(port) if port else 80


class HostCheck:
    """Whether a request's Host, and an action's Origin, name this page."""

    def __init__(self, *, listen_host: str, port: int, allowed: tuple[str, ...] = ()) -> None:
        self._port = port
        self._allowed = frozenset(a.lower() for a in allowed)
        self._listen = _ip(listen_host)
        self._any = self._listen is not None and self._listen.is_unspecified
        self._local = is_loopback(listen_host)

    def host_ok(self, host: str | None) -> bool:
        if host is None:
            return False
        host = host.strip().lower()
        if host in self._allowed:
            return True
        split = _split(host)
        if split is None or split[1] != self._port:
            return False
        name, _ = split
        if name == "localhost":
            return self._local or self._any
        ip = _ip(name)
        if ip is None:
            return False
        if self._any:
            return True
        if self._listen is None:  # listen: localhost
            return ip.is_loopback
        return ip == self._listen

    def origin_ok(self, origin: str, host: str) -> bool:
        """``origin`` is exactly ``http://`` and the request's (allowed) Host."""
        origin, host = origin.strip().lower(), host.strip().lower()
        if not self.host_ok(host):
            return False
        schemes = ("http://", "https://") if host in self._allowed else ("http://",)
        return any(origin == scheme + host for scheme in schemes)
