"""The control socket server: reads request lines, dispatches them to a Handler, streams replies.

One selector thread accepts connections and reads request lines without blocking, under a
size limit and a read deadline; only a complete request gets a worker thread. Open connections
are capped at ``max_connections``: when the cap is reached, the longest-idle connection that has
not yet sent its request is dropped for the new one, so a flood of idle clients costs a bounded
number of descriptors and bytes and cannot lock out a client that actually sends a request.
When every slot is running a request, new connections are answered ``busy`` and closed.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from pathlib import Path

import structlog

from backup_sidecar.control import socketfile
from backup_sidecar.control.answer import Answerer, Handler, Logger, RequestCounter, crash_reply
from backup_sidecar.control.connection import Connection, PeerCred
from backup_sidecar.control.protocol import ErrorCode


class ControlServer:
    """Serve the control protocol on a Unix socket at ``path`` until ``stop()``."""

    def __init__(
        self,
        path: Path,
        *,
        handler: Handler,
        mode: int = 0o660,
        max_request_bytes: int = 65536,
        drain_bytes: int = 4 << 20,
        read_timeout_s: float = 10.0,
        write_timeout_s: float = 10.0,
        max_connections: int = 64,
        stop_timeout_s: float = 10.0,
        log: Logger | None = None,
        count: RequestCounter | None = None,
    ) -> None:
        self.path = path
        self._mode = mode
        self._max_request_bytes = max_request_bytes
        self._drain_bytes = drain_bytes
        self._read_timeout_s = read_timeout_s
        self._write_timeout_s = write_timeout_s
        self._max_connections = max_connections
        self._stop_timeout_s = stop_timeout_s
        self._log: Logger = log if log is not None else structlog.get_logger(__name__)
        self._answerer = Answerer(handler, log=self._log, count=count)
        self._stopping = threading.Event()
        self._idle = threading.Condition()
        self._active: set[Connection] = set()
        self._pending: dict[socket.socket, Connection] = {}
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._listener: socket.socket | None = None
        self._identity: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    @property
    def open_connections(self) -> int:
        with self._idle:
            return len(self._pending) + len(self._active)

    def __enter__(self) -> ControlServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Create the socket (replacing only a stale socket), then serve in a background thread."""
        if self._thread is not None:
            raise RuntimeError("control server already started")
        try:
            socketfile.clear_path(self.path)
            self._listener, self._identity = socketfile.bind(self.path, mode=self._mode)
        except BaseException:
            self._close_resources()
            raise
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._loop, name="control-accept", daemon=True)
        self._thread.start()
        self._log.info("control_listening", path=str(self.path), mode=f"{self._mode:04o}")

    def stop(self) -> None:
        """Stop listening, wait for running requests up to the grace time, remove the socket."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self._thread is not None:
                self._stopping.set()
                self._wake_w.send(b"\0")
                self._thread.join()
            self._log.info("control_draining", in_flight=self.open_connections)
            with self._idle:
                self._idle.wait_for(lambda: not self._active, timeout=self._stop_timeout_s)
                leftover = list(self._active)
            if leftover:
                self._log.warning("control_stop_timeout", in_flight=len(leftover))
                for conn in leftover:
                    conn.abort()
        finally:
            socketfile.remove_if_ours(self.path, self._identity)
            self._close_resources()
            self._log.info("control_stopped", path=str(self.path))

    def _close_resources(self) -> None:
        self._stopped = True
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _loop(self) -> None:
        try:
            while not self._stopping.is_set():
                timeout = None
                if self._pending:
                    first = next(iter(self._pending.values()))
                    timeout = max(0.0, first.deadline - time.monotonic())
                for key, _ in self._selector.select(timeout):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif isinstance(key.data, Connection) and key.fileobj in self._pending:
                        # (an accept earlier in this batch may have evicted and closed it)
                        self._read(key.data)
                self._expire()
        except Exception:  # noqa: BLE001 - a bug here must be logged, not lost in a thread
            self._log.error("control_loop_crashed", exc_info=True)
        finally:
            for conn in list(self._pending.values()):
                self._forget(conn)
                conn.close()
            if self._listener is not None:
                self._listener.close()

    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(socketfile.BACKLOG):
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # e.g. out of descriptors: back off instead of spinning
                self._log.error("control_accept_failed", error=str(exc))
                self._stopping.wait(0.1)
                return
            sock.setblocking(False)
            deadline = time.monotonic() + self._read_timeout_s
            conn = Connection(sock, PeerCred.of(sock), deadline)
            if self.open_connections >= self._max_connections:
                if not self._pending:
                    self._log.warning("control_connection_rejected", **conn.peer.log_fields())
                    conn.reject("busy", f"too many control connections ({self._max_connections})")
                    continue
                oldest = next(iter(self._pending.values()))
                self._drop(oldest, "busy", "control socket full; idle connection closed")
            with self._idle:
                self._pending[sock] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _read(self, conn: Connection) -> None:
        if conn.drained is not None:
            self._drain(conn)
            return
        want = self._max_request_bytes + 1 - len(conn.buf)
        try:
            chunk = conn.sock.recv(min(want, 65536))
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
            conn.buf.clear()
        if chunk:
            conn.buf += chunk
            end = conn.buf.find(b"\n", len(conn.buf) - len(chunk))
            if end < 0 and len(conn.buf) <= self._max_request_bytes:
                return
            if end < 0:
                self._refuse_oversized(conn)
                return
            line = bytes(conn.buf[:end])
        elif conn.buf:  # the client half-closed after an unterminated line: that is its request
            line = bytes(conn.buf)
        else:
            self._forget(conn)
            conn.close()
            return
        self._forget(conn)
        self._hand_off(conn, line)

    def _refuse_oversized(self, conn: Connection) -> None:
        """Answer ``bad_request``, then keep reading (and discarding) up to ``drain_bytes`` more
        until the client closes or the read deadline passes: closing a Unix socket with unread
        bytes resets it, and a client still sending its request would never see the answer."""
        message = f"request exceeds {self._max_request_bytes} bytes"
        self._log.warning("control_connection_dropped", reason=message, **conn.peer.log_fields())
        conn.answer_and_drain("bad_request", message)
        with self._idle:  # re-queued behind the others: its new deadline is the latest
            del self._pending[conn.sock]
            self._pending[conn.sock] = conn
        conn.deadline = time.monotonic() + self._read_timeout_s

    def _drain(self, conn: Connection) -> None:
        assert conn.drained is not None
        try:
            chunk = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        conn.drained += len(chunk)
        if not chunk or conn.drained > self._drain_bytes:
            self._forget(conn)
            conn.close()

    def _expire(self) -> None:
        now = time.monotonic()
        while self._pending:
            conn = next(iter(self._pending.values()))
            if conn.deadline > now:
                return
            if conn.drained is not None:  # answered already
                self._forget(conn)
                conn.close()
                continue
            message = f"no complete request line within {self._read_timeout_s:g}s"
            self._drop(conn, "bad_request", message)

    def _forget(self, conn: Connection) -> None:
        self._selector.unregister(conn.sock)
        with self._idle:
            del self._pending[conn.sock]

    def _drop(self, conn: Connection, code: ErrorCode, message: str) -> None:
        if conn.drained is not None:  # answered already: only the draining stops
            self._forget(conn)
            conn.close()
            return
        self._log.warning("control_connection_dropped", reason=message, **conn.peer.log_fields())
        self._forget(conn)
        conn.reject(code, message)

    def _hand_off(self, conn: Connection, line: bytes) -> None:
        conn.sock.settimeout(self._write_timeout_s)
        with self._idle:
            self._active.add(conn)
        worker = threading.Thread(target=self._work, args=(conn, line), name="control-conn")
        worker.daemon = True
        try:
            worker.start()
        except RuntimeError:  # the process is out of threads
            with self._idle:
                self._active.discard(conn)
            conn.sock.setblocking(False)
            conn.reject("busy", "the daemon cannot start another request now")

    def _work(self, conn: Connection, line: bytes) -> None:
        op: str | None = None
        try:
            try:
                op, reply = self._answerer.answer(conn, line)
            except Exception:  # noqa: BLE001 - a bug must be answered and logged, not kill us
                self._log.error("control_request_crashed", op=op, exc_info=True)
                reply = crash_reply()
            for i, piece in enumerate(reply, start=1):
                conn.send(piece, last=i == len(reply))
        finally:
            conn.close()
            with self._idle:
                self._active.discard(conn)
                self._idle.notify_all()
        if conn.failure is not None:  # logged once the slot is free again
            fields = conn.peer.log_fields()
            self._log.info("control_client_gone", op=op, error=str(conn.failure), **fields)
