"""A real local HTTP receiver for notifications and heartbeat pings: a threaded http.server on
127.0.0.1 that records every request (method, path, JSON body) and answers 200.

apprise reaches it with ``json://127.0.0.1:PORT/path`` (a POST of ``{"title", "message",
"type", ...}``), the heartbeat with ``http://127.0.0.1:PORT/path`` (a GET).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    body: dict[str, Any]


class Receiver:
    """The running server and what it received, in arrival order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = {"raw": raw.decode("utf-8", "replace")}
                with receiver._lock:
                    receiver._received.append(Received(self.command, self.path, body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = do_POST = _record  # noqa: N815  (http.server's names)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])

    def received(self, path_prefix: str = "/") -> list[Received]:
        with self._lock:
            return [r for r in self._received if r.path.startswith(path_prefix)]

    def url(self, scheme: str, path: str) -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    """A `Receiver` serving on a thread until the block ends."""
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join()
