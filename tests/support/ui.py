"""Talking to the daemon's web page (`ui` section) over real HTTP from tests."""

from __future__ import annotations

import http.client
import re
from typing import Any
from urllib.parse import urlencode

from support.daemon import Daemon

#: The bearer token the ui tests' daemons read from UI_TOKEN.
TOKEN = "test-token-0123456789abcdef"  # noqa: S105 - a test token
UI: dict[str, Any] = {"enabled": True, "listen": "127.0.0.1:0", "token_env": "UI_TOKEN"}
ENV = {"UI_TOKEN": TOKEN}


def ui_port(d: Daemon) -> int:
    """The port the daemon's page bound (it listens on port 0)."""
    return int(d.log.find("ui_listening")[0]["port"])


def call(
    d: Daemon,
    method: str,
    path: str,
    *,
    token: str | None = TOKEN,
    form: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    """(status, body) of one request to the page."""
    conn = http.client.HTTPConnection("127.0.0.1", ui_port(d), timeout=120)
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    body = None
    if form is not None:
        body = urlencode(form)
        sent["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def csrf_of(page: str) -> str:
    """The CSRF token the page's forms carry."""
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, "no CSRF token in the page"
    return found.group(1)
