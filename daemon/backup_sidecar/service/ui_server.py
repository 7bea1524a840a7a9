"""The web page (`ui` section) over HTTP: status, archives, actions (service/ui_app.py).

A stdlib ThreadingHTTPServer in a daemon thread, like the metrics port. Every
request is authenticated (service/ui_auth.py); every POST needs the page's CSRF token and, when
the browser sends one, an Origin naming this host.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog

from backup_sidecar.control.answer import Handler
from backup_sidecar.control.protocol import error_body
from backup_sidecar.errors import ConfigError, SidecarError
from backup_sidecar.service import ui_pages as pages
from backup_sidecar.service.handler import DaemonState
from backup_sidecar.service.httpserver import REQUEST_TIMEOUT_S, DaemonHTTPServer
from backup_sidecar.service.live import LiveConfig
from backup_sidecar.service.ui_app import UiApp
from backup_sidecar.service.ui_auth import Gate
from backup_sidecar.service.ui_conditions import ConditionEvents
from backup_sidecar.service.ui_events import RecentEvents
from backup_sidecar.service.ui_host import HostCheck

log = structlog.get_logger(__name__)

MAX_FORM_BYTES = 16 * 1024
STOPPING = "refused: the daemon is shutting down; nothing was started (try again after it restarts)"
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
}


class _Server(DaemonHTTPServer):
    failure_event = "ui_request_failed"

    #: What the page reads and does; set by UiServer.serve() before the first request is read.
    app: UiApp

    def __init__(self, address: tuple[str, int], *, allowed: tuple[str, ...]) -> None:
        super().__init__(address, _Handler)
        self.hosts = HostCheck(
            listen_host=address[0], port=int(self.server_address[1]), allowed=allowed
        )


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT_S
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if not self._right_host() or not self._authenticated():
            return
        path = urlsplit(self.path).path
        if path == "/":
            self._page(lambda: self.server.app.home(pages.outcome()))
        elif path == f"/static/{pages.HTMX}":
            body = resources.files("backup_sidecar.service").joinpath("static", pages.HTMX)
            self._send(HTTPStatus.OK, body.read_bytes(), "text/javascript; charset=utf-8")
        elif path == "/progress":
            every = "1s" if urlsplit(self.path).query == "every=1s" else "500ms"
            box = pages.progress_box(self.server.app.progress.now(), every=every)
            self._send(HTTPStatus.OK, box.encode(), "text/html; charset=utf-8")
        elif path == "/static/ui.css":
            self._send(HTTPStatus.OK, pages.stylesheet(), "text/css; charset=utf-8")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def do_POST(self) -> None:
        if not self._right_host() or not self._authenticated():
            return
        path = urlsplit(self.path).path
        declared = self.headers.get("Content-Length") or "0"
        length = int(declared) if declared.isdigit() else -1
        if not 0 <= length <= MAX_FORM_BYTES:
            self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "refused: a form of 0-16 KiB")
            return
        raw = self.rfile.read(length).decode("utf-8", "replace")
        fields = parse_qs(raw, keep_blank_values=True)
        form = {k: v[0] for k, v in fields.items()}
        form["db"] = ",".join(fields.get("db", []))  # the plan's database checkboxes
        origin = self.headers.get("Origin")
        host = self.headers.get("Host", "")
        if not self.server.app.gate.csrf_ok(form.get("csrf")) or (
            origin is not None and not self.server.hosts.origin_ok(origin, host)
        ):
            log.warning("ui_forged_post_refused", path=path, client=self.client_address[0])
            self._refuse(HTTPStatus.FORBIDDEN, "refused: the form's CSRF token or origin is wrong")
            return
        if path not in ("/backup", "/verify", "/restore/plan", "/restore"):
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
            return
        if self.server.app.stopping():  # as the socket, which stopped accepting: nothing starts
            log.warning("ui_action_refused", path=path, reason="stopping")
            self._page(lambda: self.server.app.home(pages.outcome(error=STOPPING)), status=503)
            return
        log.info(
            "ui_action",
            path=path,
            archive=form.get("archive"),
            policy=form.get("policy"),
            source=form.get("from", "local"),
        )
        self._page(lambda: self.server.app.act(path, form))

    def _page(self, render: Any, *, status: int = HTTPStatus.OK) -> None:
        """Render a page; an operation's failure is the home page with its one-line error."""
        app = self.server.app
        try:
            body = render()
        except Exception as exc:
            if isinstance(exc, SidecarError):
                log.warning("ui_action_failed", error=str(exc))
            else:
                log.error("ui_action_crashed", exc_info=True)
            message = error_body(exc).message
            try:
                body = app.home(pages.outcome(error=message))
            except Exception:  # noqa: BLE001 - the status itself failed: a bare page
                body = pages.page("error", pages.outcome(error=message))
        self._send(HTTPStatus(status), body, "text/html; charset=utf-8")

    def _right_host(self) -> bool:
        """Refuse (421) a Host not naming this page: a rebound DNS name of another site."""
        host = self.headers.get("Host")
        if self.server.hosts.host_ok(host):
            return True
        log.warning("ui_wrong_host_refused", host=(host or "")[:200], client=self.client_address[0])
        self._refuse(
            HTTPStatus.MISDIRECTED_REQUEST,
            "refused: the Host header names no address of this page (ui.listen, ui.allowed_hosts)",
        )
        return False

    def _authenticated(self) -> bool:
        gate = self.server.app.gate
        verdict = gate.check(self.headers.get("Authorization"))
        if verdict == "ok":
            return True
        if verdict == "busy":
            log.warning("ui_auth_busy", client=self.client_address[0])
            message = "busy: too many password checks at once; try again in a second"
            self._send(
                HTTPStatus.TOO_MANY_REQUESTS,
                message.encode() + b"\n",
                "text/plain; charset=utf-8",
                extra={"Retry-After": "1"},
            )
            self.close_connection = True
            return False
        log.warning("ui_unauthorized", path=self.path[:200], client=self.client_address[0])
        scheme = 'Basic realm="backup-sidecar", charset="UTF-8"' if gate.basic else "Bearer"
        self._send(
            HTTPStatus.UNAUTHORIZED,
            b"unauthorized: send the ui token or password\n",
            "text/plain; charset=utf-8",
            extra={"WWW-Authenticate": scheme},
        )
        self.close_connection = True  # an unread request body must not be read as a request
        return False

    def _refuse(self, status: HTTPStatus, message: str) -> None:
        self._send(status, message.encode() + b"\n", "text/plain; charset=utf-8")
        self.close_connection = True

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        *,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        for name, value in {**_HEADERS, **(extra or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("ui_request", method=self.command, path=self.path[:200], status=str(code))

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("ui_server_message", message=format % args, client=self.client_address[0])


class UiServer:
    """The page's listener from bind() (secrets checked, `ui.listen` bound, nothing served:
    before the scheduler starts) and its server from serve() to stop(); a disabled `ui`
    starts nothing."""

    def __init__(self, server: _Server | None, gate: Gate | None = None) -> None:
        self._server = server
        self._gate = gate
        self._thread: threading.Thread | None = None
        self.bound: tuple[str, int] | None = None
        if server is not None:
            self.bound = (str(server.server_address[0]), int(server.server_address[1]))

    @classmethod
    def bind(cls, live: LiveConfig, environ: Mapping[str, str]) -> UiServer:
        """Check the secrets the `ui` section names and bind `ui.listen` when `ui.enabled`:
        ConfigError naming the key (a variable unset or malformed, the port in use)."""
        cfg = live.now.settings.ui
        if not cfg.enabled:
            return cls(None)
        gate = Gate.from_config(cfg, environ)
        try:
            server = _Server(cfg.address, allowed=cfg.allowed_hosts)
        except OSError as exc:
            reason = f"cannot listen there: {exc.strerror or exc}"
            raise ConfigError(f"ui.listen {cfg.listen}", "", reason) from None
        return cls(server, gate)

    def serve(
        self,
        live: LiveConfig,
        handler: Handler,
        state: DaemonState,
        stopping: threading.Event | None = None,
    ) -> None:
        """Serve the page: its recent events subscribe to the daemon's outcomes and listen to
        its health; once ``stopping`` is set (the daemon shuts down) every action is refused
        with 503."""
        server, gate = self._server, self._gate
        if server is None or gate is None:
            return
        events = RecentEvents()
        server.app = app = UiApp(handler=handler, live=live, gate=gate, events=events)
        if stopping is not None:
            app.stopping = stopping.is_set
        state.outcomes.subscribe(events)
        state.health.listen(
            ConditionEvents(health=state.health, events=events, upload_error=_upload_error(state))
        )
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="ui-http", daemon=True
        )
        self._thread.start()
        assert self.bound is not None
        log.info("ui_listening", host=self.bound[0], port=self.bound[1], auth=not gate.open)

    def stop(self, *, timeout_s: float = 5.0) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        if thread is not None:
            server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout_s)


def _upload_error(state: DaemonState) -> Callable[[], str | None]:
    """The offsite upload's last pass error now (None: none, or no offsite section)."""

    def error() -> str | None:
        if state.offsite is None or state.runtime.offsite is None:
            return None
        return state.offsite.state.snapshot().last_error

    return error
