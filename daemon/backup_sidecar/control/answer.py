"""Answering one complete request line: decode it, run it through the Handler, count it, log it,
and turn every failure into the protocol's error reply."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, Protocol

from backup_sidecar import __version__, errors
from backup_sidecar.control.connection import Connection, PeerCred
from backup_sidecar.control.protocol import (
    EncodedResult,
    ErrorResponse,
    ProgressEvent,
    encode_ok,
    error_body,
)
from backup_sidecar.control.requests import PingRequest, Request, RestoreRequest, decode_request
from backup_sidecar.control.results import PingResult, Result
from backup_sidecar.control.wire import encode
from backup_sidecar.errors import ProtocolError

ProgressFn = Callable[[str, int, int], None]


class Handler(Protocol):
    """What the server dispatches to (the service implements it); raises errors.py exceptions.

    The server answers ``ping`` itself and refuses a restore without ``confirm`` or ``dry_run``
    before calling it, so every handler gets those rules.
    """

    def handle(
        self, request: Request, *, progress: ProgressFn, peer: PeerCred
    ) -> Result | EncodedResult: ...


class RequestCounter(Protocol):
    """Counts every request the server answers (the daemon's control_requests_total)."""

    def __call__(self, op: str, *, ok: bool, busy: bool = False) -> None: ...


#: The op label of a request that could not be parsed or named no known op: labels stay bounded
#: to the protocol's ops, never a string a client made up.
UNKNOWN_OP = "unknown"


class Logger(Protocol):
    """The slice of a structlog logger the server uses."""

    def info(self, event: str, **kw: Any) -> Any: ...
    def warning(self, event: str, **kw: Any) -> Any: ...
    def error(self, event: str, **kw: Any) -> Any: ...


def ping_result() -> PingResult:
    """The answer to ``ping``: this process is alive, and which version it runs."""
    return PingResult(pid=os.getpid(), version=__version__)


def crash_reply() -> tuple[bytes, ...]:
    """The reply to a request whose answering crashed: a generic ``failed``, nothing leaked."""
    return (encode(ErrorResponse(error=error_body(RuntimeError()))),)


class Answerer:
    """Answers complete request lines for the server's worker threads."""

    def __init__(self, handler: Handler, *, log: Logger, count: RequestCounter | None) -> None:
        self._handler = handler
        self._log = log
        self._count = count

    def answer(self, conn: Connection, line: bytes) -> tuple[str | None, tuple[bytes, ...]]:
        """The op and the reply line, in pieces sent one after the other."""
        try:
            request = decode_request(line)
        except ProtocolError as exc:
            self._log.warning("control_bad_request", reason=exc.reason, **conn.peer.log_fields())
            self._counted(exc.op or UNKNOWN_OP, ok=False)
            return exc.op, (encode(ErrorResponse(error=error_body(exc))),)
        op = request.op
        self._log.info("control_request", op=op, **conn.peer.log_fields())
        started = time.monotonic()
        try:
            reply = encode_ok(self._run(request, conn))
        except Exception as exc:  # noqa: BLE001 - every failure is answered, none crashes us
            body = error_body(exc)
            if isinstance(exc, errors.SidecarError):
                self._log.warning("control_request_failed", op=op, code=body.code, error=str(exc))
            else:
                self._log.error("control_request_crashed", op=op, exc_info=True)
            self._counted(op, ok=False, busy=isinstance(exc, errors.BusyError))
            return op, (encode(ErrorResponse(error=body)),)
        self._log.info("control_request_completed", op=op, duration_s=time.monotonic() - started)
        self._counted(op, ok=True)
        return op, reply

    def _counted(self, op: str, *, ok: bool, busy: bool = False) -> None:
        if self._count is not None:
            self._count(op, ok=ok, busy=busy)

    def _run(self, request: Request, conn: Connection) -> Result | EncodedResult:
        if isinstance(request, PingRequest):
            return ping_result()
        if isinstance(request, RestoreRequest) and not (request.confirm or request.dry_run):
            raise errors.RestoreRefusedError(
                'the request must say "confirm": true (or "dry_run": true); nothing was changed'
            )

        def progress(stage: str, done: int, total: int) -> None:
            conn.send(encode(ProgressEvent(stage=stage, done=done, total=total)))

        return self._handler.handle(request, progress=progress, peer=conn.peer)
