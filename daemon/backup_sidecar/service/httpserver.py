"""The metrics port: `GET /metrics` (the injected registry) and `GET /healthz` (the HealthState).

A stdlib ThreadingHTTPServer in a daemon thread: a slow scrape never delays the scheduler, and
a client that stalls is cut off by a socket timeout. Requests are logged at debug level only.
"""

from __future__ import annotations

import json
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from backup_sidecar.errors import ConfigError
from backup_sidecar.service.health import HealthState

log = structlog.get_logger(__name__)

#: Seconds a client may take to send its request before its connection is dropped.
REQUEST_TIMEOUT_S = 10.0


class DaemonHTTPServer(ThreadingHTTPServer):
    """The daemon's HTTP servers (metrics, web page): IPv4 or IPv6 by the host's form, a
    thread per request that never keeps the daemon from exiting, failures logged."""

    daemon_threads = True  # a stuck client must never keep the daemon from exiting
    allow_reuse_address = True
    #: The log event of a failed request.
    failure_event = "http_request_failed"

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log a failed request (a client gone mid-response, a failing collector), never print."""
        log.warning(self.failure_event, client=str(client_address), exc_info=True)


class _Server(DaemonHTTPServer):
    def __init__(
        self, address: tuple[str, int], *, registry: CollectorRegistry, health: HealthState
    ) -> None:
        self.registry = registry
        self.health = health
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT_S
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def _respond(self, *, send_body: bool) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            status, body = HTTPStatus.OK, encoder(self.server.registry)
        elif path == "/healthz":
            status, body, content_type = self._healthz()
        else:
            status, body = HTTPStatus.NOT_FOUND, b"not found; try /metrics or /healthz\n"
            content_type = "text/plain; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _healthz(self) -> tuple[HTTPStatus, bytes, str]:
        current = self.server.health.current()
        reasons, unknown = current.reasons(), current.unknown()
        doc: dict[str, Any]
        if reasons:
            status, doc = (
                HTTPStatus.SERVICE_UNAVAILABLE,
                {"status": "unhealthy", "reasons": reasons},
            )
        else:
            status, doc = HTTPStatus.OK, {"status": "ok"}
        if unknown:
            doc["unknown"] = unknown
        if notes := current.notes():
            doc["notes"] = notes
        return status, json.dumps(doc).encode() + b"\n", "application/json"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("http_request", method=self.command, path=self.path, status=str(code))

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http_server_message", message=format % args, client=self.client_address[0])


class MetricsServer:
    """Serves `/metrics` and `/healthz` from a background thread between start() and stop()."""

    def __init__(self, *, registry: CollectorRegistry, health: HealthState) -> None:
        self._registry = registry
        self._health = health
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on host:port (0 picks a free port) and return the address actually bound."""
        if self._server is not None:
            raise RuntimeError("metrics server already started")
        try:
            server = _Server((host, port), registry=self._registry, health=self._health)
        except OSError as exc:  # a port in use: one line naming the key, before any backup
            reason = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            raise ConfigError("metrics.port", "", reason) from None
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="metrics-http",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        bound_host, bound_port = server.server_address[:2]
        log.debug("metrics_server_started", host=bound_host, port=bound_port)
        return str(bound_host), int(bound_port)

    def stop(self, *, timeout_s: float = 5.0) -> None:
        """Stop listening, close the socket and join the serving thread; safe to call twice."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return
        server.shutdown()
        server.server_close()
        thread.join(timeout_s)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
