"""One accepted control connection: who is on the other end and how replies reach it."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from dataclasses import dataclass

from backup_sidecar.control.protocol import ErrorBody, ErrorCode, ErrorResponse
from backup_sidecar.control.wire import encode


@dataclass(frozen=True)
class PeerCred:
    """Who is on the other end of a connection, from SO_PEERCRED at connect time."""

    pid: int
    uid: int
    gid: int

    @classmethod
    def of(cls, sock: socket.socket) -> PeerCred:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
        return cls(pid=pid, uid=uid, gid=gid)

    def log_fields(self) -> dict[str, int]:
        return {"peer_uid": self.uid, "peer_gid": self.gid, "peer_pid": self.pid}


class Connection:
    """The read buffer while the request line arrives, then the write side of the reply.

    Writes are whole lines under a lock, so progress events from any thread never interleave;
    after the final reply, or once the client is gone, nothing more is written.
    """

    def __init__(self, sock: socket.socket, peer: PeerCred, deadline: float) -> None:
        self.sock = sock
        self.peer = peer
        self.deadline = deadline
        self.buf = bytearray()
        #: After an oversized request was answered: bytes read and thrown away since (None: not
        #: draining). Closing with unread bytes would reset the connection, losing the answer.
        self.drained: int | None = None
        self.failure: OSError | None = None
        self._finished = False
        self._closed = False
        self._write_lock = threading.Lock()
        self._state_lock = threading.Lock()

    def send(self, data: bytes, *, last: bool = False) -> None:
        """Write one line; failures are recorded in ``failure``, never raised."""
        with self._write_lock:
            if self._finished or self.failure is not None:
                return
            self._finished = last
            try:
                self.sock.sendall(data)
            except OSError as exc:  # gone, reset, or not reading within the send timeout
                self.failure = exc

    def reject(self, code: ErrorCode, message: str) -> None:
        """Best-effort error line on the still non-blocking socket, then close."""
        with contextlib.suppress(OSError):
            self.sock.send(encode(ErrorResponse(error=ErrorBody(code=code, message=message))))
        self.close()

    def answer_and_drain(self, code: ErrorCode, message: str) -> None:
        """Best-effort error line, then end our side of the stream; the caller keeps reading
        (and discarding) what the client still sends, so it can read the answer."""
        with contextlib.suppress(OSError):
            self.sock.send(encode(ErrorResponse(error=ErrorBody(code=code, message=message))))
            self.sock.shutdown(socket.SHUT_WR)
        self.buf.clear()
        self.drained = 0

    def abort(self) -> None:
        """Unblock a worker stuck on this connection (the shutdown grace time ran out)."""
        with self._state_lock:
            if not self._closed:
                with contextlib.suppress(OSError):
                    self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._state_lock:
            self._closed = True
            self.sock.close()
