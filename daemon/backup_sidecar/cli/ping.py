"""`ctl ping` (and `healthcheck`'s `status` when the metrics endpoint is disabled) without the
control client's models: they must start at once (liveness probes, the container's HEALTHCHECK).

The same exchange as control/client.py (one JSON line out, reply lines back), checked by hand
for the one answer it expects, so pydantic and the protocol's models are never imported. The
socket is `_socket`'s, the C module socket.py wraps (socket.py's enums take 2 ms to build, a
tenth of the command's budget over `import click`), read line by line as makefile() would.
"""

from __future__ import annotations

import _socket
import contextlib
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from backup_sidecar.errors import ControlError, DaemonConnectionError, DaemonNotRunningError

_MAX_REPLY_BYTES: Final = 1024 * 1024


def _connect(path: Path, timeout_s: float | None) -> _socket.socket:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    if timeout_s is not None:  # as ControlClient: a blocking connect bounded by SO_SNDTIMEO
        seconds = int(timeout_s)
        timeval = struct.pack("ll", seconds, int((timeout_s - seconds) * 1_000_000))
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDTIMEO, timeval)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise DaemonNotRunningError(path) from None
    except PermissionError:
        sock.close()
        reason = "permission denied (join the socket's group or run as its owner)"
        raise DaemonConnectionError(path, reason) from None
    except BlockingIOError:
        sock.close()
        reason = f"the daemon did not accept the connection within {timeout_s:g}s"
        raise DaemonConnectionError(path, reason) from None
    except OSError as exc:
        sock.close()
        raise DaemonConnectionError(path, f"cannot connect: {exc}") from exc
    sock.settimeout(timeout_s)
    return sock


def _result(path: Path, line: bytes) -> dict[str, Any] | None:
    """The result of one reply line (None: a progress event, read on)."""
    try:
        reply = json.loads(line)
    except (ValueError, RecursionError):
        raise DaemonConnectionError(path, "malformed reply: not JSON") from None
    if not isinstance(reply, dict):
        raise DaemonConnectionError(path, "malformed reply: not an object")
    if reply.get("event") == "progress":
        return None
    error = reply.get("error")
    if reply.get("ok") is False and isinstance(error, dict):
        raise ControlError(str(error.get("code")), str(error.get("message")))
    result = reply.get("result")
    if reply.get("ok") is not True or not isinstance(result, dict):
        raise DaemonConnectionError(path, "malformed reply: not an answer")
    return result


def _answer(path: Path, line: bytes) -> dict[str, Any] | None:
    """The ping's result from one reply line (None: a progress event, read on)."""
    result = _result(path, line)
    if result is None:
        return None
    if (
        result.get("pong") is not True
        or type(result.get("pid")) is not int
        or not isinstance(result.get("version"), str)
    ):
        raise DaemonConnectionError(path, "malformed reply: not an answer to ping")
    return {"pong": True, "pid": result["pid"], "version": result["version"]}


def _health(path: Path, line: bytes) -> dict[str, Any] | None:
    """``status``'s health from one reply line: healthy and the reasons."""
    result = _result(path, line)
    if result is None:
        return None
    healthy, reasons = result.get("healthy"), result.get("reasons")
    if type(healthy) is not bool or not isinstance(reasons, list):
        raise DaemonConnectionError(path, "malformed reply: not an answer to status")
    return {"healthy": healthy, "reasons": [str(r) for r in reasons]}


def _readline(sock: _socket.socket, pending: bytearray) -> bytes:
    """The next line, as ``sock.makefile("rb").readline(_MAX_REPLY_BYTES + 1)`` reads it: at
    most that many bytes, without a line feed when cut there or at the end of the stream."""
    while (end := pending.find(b"\n")) < 0 and len(pending) <= _MAX_REPLY_BYTES:
        chunk = sock.recv(65536)
        if not chunk:
            break
        pending += chunk
    size = min(end + 1 if end >= 0 else len(pending), _MAX_REPLY_BYTES + 1)
    line = bytes(pending[:size])
    del pending[:size]
    return line


def ping(path: Path, *, timeout_s: float | None) -> dict[str, Any]:
    """Ask the daemon on ``path`` for ``ping``: its result as `ctl ping` prints it."""
    return _exchange(path, b'{"op":"ping"}\n', _answer, timeout_s=timeout_s)


def health(path: Path, *, timeout_s: float | None) -> dict[str, Any]:
    """Ask the daemon on ``path`` for ``status``: ``{"healthy": bool, "reasons": [...]}``
    (`healthcheck` when the metrics endpoint is disabled)."""
    return _exchange(path, b'{"op":"status"}\n', _health, timeout_s=timeout_s)


def _exchange(
    path: Path,
    request: bytes,
    answer: Callable[[Path, bytes], dict[str, Any] | None],
    *,
    timeout_s: float | None,
) -> dict[str, Any]:
    sock, pending = _connect(path, timeout_s), bytearray()
    try:
        # it may have answered and closed already (busy): read that
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        while True:
            try:
                line = _readline(sock, pending)
            except TimeoutError:
                raise DaemonConnectionError(path, f"no reply within {timeout_s:g}s") from None
            except OSError as exc:
                raise DaemonConnectionError(path, f"connection lost: {exc}") from exc
            if not line:
                raise DaemonConnectionError(path, "the daemon closed the connection unanswered")
            if not line.endswith(b"\n"):
                raise DaemonConnectionError(path, "connection closed mid-reply")
            found = answer(path, line)
            if found is not None:
                return found
    finally:
        sock.close()
