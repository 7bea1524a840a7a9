"""A TCP proxy in front of an S3 endpoint that can stall downloads, like a byte-dripping proxy
or a dead link in the middle of a GET.

Everything passes through untouched until ``arm(suffix)``; from then on, the answer to a GET of
an object whose path ends with ``suffix`` gets its headers and the first ``drip`` bytes through,
then nothing more (the connection stays open, silent) until ``close()``. ``stalled`` is set
once such a GET is being held.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlsplit


class StallingProxy:
    def __init__(self, upstream: str, *, drip: int = 16 * 1024) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname is not None and parts.port is not None, upstream
        self._upstream = (parts.hostname, parts.port)
        self._drip = drip
        self._suffix: bytes | None = None
        self._closed = threading.Event()
        self.stalled = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._sockets: list[socket.socket] = [self._listener]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def arm(self, suffix: str) -> None:
        """Stall the GETs of objects ending with ``suffix`` from now on."""
        self._suffix = suffix.encode()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._upstream)
            with self._lock:
                self._sockets += [client, server]
            held = threading.Event()  # this connection's answer is being stalled
            threading.Thread(
                target=self._requests, args=(client, server, held), daemon=True
            ).start()
            threading.Thread(target=self._answers, args=(server, client, held), daemon=True).start()

    def _requests(
        self, client: socket.socket, server: socket.socket, held: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                line = data.split(b"\r\n", 1)[0].split(b" ")
                if (
                    self._suffix is not None
                    and len(line) == 3
                    and line[0] == b"GET"
                    and line[1].split(b"?", 1)[0].endswith(self._suffix)
                ):
                    held.set()  # before the request goes: its answer is the one stalled
                server.sendall(data)
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_WR)

    def _answers(self, server: socket.socket, client: socket.socket, held: threading.Event) -> None:
        passed = 0
        with contextlib.suppress(OSError):
            while data := server.recv(4096):
                if held.is_set():
                    data = data[: max(self._drip - passed, 0)]
                    passed += len(data)
                    if passed >= self._drip:
                        client.sendall(data)
                        self.stalled.set()
                        self._closed.wait()
                        return
                client.sendall(data)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)
