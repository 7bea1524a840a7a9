"""`healthcheck`'s GET: one HTTP/1.0 request over a plain socket for an http:// URL.

urllib.request imports ssl, hashlib, email and http.client: half as much again as the whole
rest of the command, run every 30 s by the container's HEALTHCHECK. The daemon's /healthz is
plain HTTP on loopback, so the request is written by hand (HTTP/1.0, the server closes the
connection after the body); an https:// URL still goes through urllib. The socket is
`_socket`'s, the C module socket.py wraps: socket.py's enums take 2 ms to build, a tenth of
the command's budget over `import click`.
"""

from __future__ import annotations

import _socket
from typing import Final
from urllib.parse import urlsplit

#: The most of an answer read: /healthz is a few hundred bytes.
_MAX_BYTES: Final = 1024 * 1024


def _connect(address: bytes | str, port: int, timeout: float) -> _socket.socket:
    """As socket.create_connection: each address getaddrinfo gives, in turn."""
    error: OSError = OSError(f"no address for {address!r}")
    for family, kind, proto, _, addr in _socket.getaddrinfo(address, port, 0, _socket.SOCK_STREAM):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(addr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error


def _plain_get(url: str, timeout: float) -> tuple[int, str]:
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = f"GET {target} HTTP/1.0\r\nHost: {parts.netloc}\r\nUser-Agent: backup-sidecar\r\n\r\n"
    chunks: list[bytes] = []
    # an ASCII host as bytes: a str is encoded with the idna codec (stringprep, a tenth of it all)
    address = host.encode("ascii") if host.isascii() else host
    sock = _connect(address, port, timeout)
    try:
        sock.sendall(request.encode("ascii"))
        while sum(map(len, chunks)) <= _MAX_BYTES and (chunk := sock.recv(65536)):
            chunks.append(chunk)
    finally:
        sock.close()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if (
        len(status_line) < 2
        or not status_line[0].startswith(b"HTTP/")
        or not status_line[1].isdigit()
    ):
        raise OSError(f"not an HTTP answer: {head[:80]!r}")
    return int(status_line[1]), body.decode("utf-8", "replace").strip()


def get(url: str, *, timeout: float) -> tuple[int, str]:
    """The status and body of the answer to GET ``url``; OSError when no answer came."""
    if url.startswith("http://"):
        return _plain_get(url, timeout)
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (https only)
            return int(resp.status), str(resp.read().decode("utf-8", "replace").strip())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace").strip()
    except urllib.error.URLError as exc:
        raise OSError(str(exc.reason)) from None
