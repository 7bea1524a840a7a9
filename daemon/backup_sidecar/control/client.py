"""The control socket client: send one request to a running daemon and return its result.

The CLI's ``ctl`` commands and the scripts use it; ``is_daemon_running`` decides whether an
operation goes through the daemon or runs directly.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, Final, overload

from backup_sidecar.control.protocol import OkResponse, ProgressEvent, Reply, decode_reply
from backup_sidecar.control.requests import (
    REQUEST_TYPES,
    BackupRequest,
    ExportRequest,
    ListRequest,
    OffsiteStatusRequest,
    PingRequest,
    PruneRequest,
    Request,
    RestoreRequest,
    ScrubRequest,
    StatusRequest,
    VerifyRequest,
    parse_request,
)
from backup_sidecar.control.results import (
    BackupResult,
    ExportResult,
    ListResult,
    OffsiteStatusResult,
    PingResult,
    PruneResult,
    RestoreResult,
    Result,
    ScrubResult,
    StatusResult,
    VerifyResult,
    parse_result,
)
from backup_sidecar.control.wire import encode
from backup_sidecar.errors import (
    ControlError,
    DaemonConnectionError,
    DaemonNotRunningError,
    ProtocolError,
)

ProgressFn = Callable[[str, int, int], None]
MAX_REPLY_BYTES: Final = 64 * 1024 * 1024


class ControlClient:
    """Talks to the daemon on ``path``; ``timeout_s`` bounds each wait (None: wait forever)."""

    def __init__(self, path: Path, *, timeout_s: float | None) -> None:
        self.path = path
        self.timeout_s = timeout_s

    def request(
        self, req: Request | Mapping[str, Any], *, on_progress: ProgressFn | None = None
    ) -> dict[str, Any]:
        """Send ``req``; return the result object as the daemon sent it, or raise ControlError
        with the daemon's code (`call` returns it as the op's result model).

        A mapping is validated first, so a bad request fails here with ProtocolError.
        Progress events are passed to ``on_progress(stage, done, total)`` in arrival order.
        """
        return self._exchange(self._validated(req), on_progress)

    @overload
    def call(self, req: PingRequest, *, on_progress: ProgressFn | None = None) -> PingResult: ...
    @overload
    def call(
        self, req: StatusRequest, *, on_progress: ProgressFn | None = None
    ) -> StatusResult: ...
    @overload
    def call(self, req: ListRequest, *, on_progress: ProgressFn | None = None) -> ListResult: ...
    @overload
    def call(
        self, req: BackupRequest, *, on_progress: ProgressFn | None = None
    ) -> BackupResult: ...
    @overload
    def call(
        self, req: VerifyRequest, *, on_progress: ProgressFn | None = None
    ) -> VerifyResult: ...
    @overload
    def call(
        self, req: ExportRequest, *, on_progress: ProgressFn | None = None
    ) -> ExportResult: ...
    @overload
    def call(
        self, req: RestoreRequest, *, on_progress: ProgressFn | None = None
    ) -> RestoreResult: ...
    @overload
    def call(self, req: PruneRequest, *, on_progress: ProgressFn | None = None) -> PruneResult: ...
    @overload
    def call(self, req: ScrubRequest, *, on_progress: ProgressFn | None = None) -> ScrubResult: ...
    @overload
    def call(
        self, req: OffsiteStatusRequest, *, on_progress: ProgressFn | None = None
    ) -> OffsiteStatusResult: ...
    @overload
    def call(self, req: Mapping[str, Any], *, on_progress: ProgressFn | None = None) -> Result: ...
    def call(
        self, req: Request | Mapping[str, Any], *, on_progress: ProgressFn | None = None
    ) -> Result:
        """Like `request`, with the result parsed into the op's model (control/results.py);
        an answer that is not one is a DaemonConnectionError naming the fault."""
        request = self._validated(req)
        data = self._exchange(request, on_progress)
        try:
            return parse_result(request.op, data)
        except ProtocolError as exc:
            raise DaemonConnectionError(self.path, f"malformed reply: {exc}") from None

    @staticmethod
    def _validated(req: Request | Mapping[str, Any]) -> Request:
        return req if isinstance(req, REQUEST_TYPES) else parse_request(req)

    def _exchange(self, request: Request, on_progress: ProgressFn | None) -> dict[str, Any]:
        with self._connect() as sock:
            # The daemon may have answered and closed already (busy, too large): read that.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(encode(request))
            with sock.makefile("rb") as stream:
                while True:
                    reply = self._read_reply(stream)
                    if isinstance(reply, ProgressEvent):
                        if on_progress is not None:
                            on_progress(reply.stage, reply.done, reply.total)
                    elif isinstance(reply, OkResponse):
                        return dict(reply.result)
                    else:
                        raise ControlError(reply.error.code, reply.error.message)

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout_s is not None:
            # A blocking connect waits for room in a full backlog up to SO_SNDTIMEO; Python's
            # own timeout would make it non-blocking, failing at once with EAGAIN instead.
            seconds = int(self.timeout_s)
            micros = int((self.timeout_s - seconds) * 1_000_000)
            timeval = struct.pack("ll", seconds, micros)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        try:
            sock.connect(str(self.path))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            raise DaemonNotRunningError(self.path) from None
        except PermissionError:
            sock.close()
            reason = "permission denied (join the socket's group or run as its owner)"
            raise DaemonConnectionError(self.path, reason) from None
        except BlockingIOError:
            sock.close()
            reason = f"the daemon did not accept the connection within {self.timeout_s:g}s"
            raise DaemonConnectionError(self.path, reason) from None
        except OSError as exc:
            sock.close()
            raise DaemonConnectionError(self.path, f"cannot connect: {exc}") from exc
        sock.settimeout(self.timeout_s)
        return sock

    def _read_reply(self, stream: IO[bytes]) -> Reply:
        try:
            line = stream.readline(MAX_REPLY_BYTES + 1)
        except TimeoutError:
            raise DaemonConnectionError(self.path, f"no reply within {self.timeout_s:g}s") from None
        except OSError as exc:
            raise DaemonConnectionError(self.path, f"connection lost: {exc}") from exc
        if not line:
            raise DaemonConnectionError(self.path, "the daemon closed the connection unanswered")
        if not line.endswith(b"\n"):
            too_long = len(line) > MAX_REPLY_BYTES
            reason = "reply too long" if too_long else "connection closed mid-reply"
            raise DaemonConnectionError(self.path, reason)
        try:
            return decode_reply(line)
        except ProtocolError as exc:
            raise DaemonConnectionError(self.path, f"malformed reply: {exc}") from None


def is_daemon_running(path: Path, *, timeout_s: float = 2.0) -> bool:
    """Whether something answers on the control socket, so operations must go through it.

    Only "nothing listens" is False: a daemon that is busy, slow, denies us or answers oddly
    still holds the databases, and bypassing it would race it.
    """
    try:
        ControlClient(path, timeout_s=timeout_s).call(PingRequest())
    except DaemonNotRunningError:
        return False
    except (DaemonConnectionError, ControlError):
        return True
    return True
