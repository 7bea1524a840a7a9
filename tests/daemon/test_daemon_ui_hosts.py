"""The web page answers only a Host naming its own address (DNS rebinding, issue 17): a page of
another site whose name was rebound to the loopback address can neither read the page (and its
CSRF token) nor restore through it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backup_sidecar.service.ui_host import HostCheck
from support.daemon import Daemon, DaemonRunner
from support.databases import row_count
from support.ui import ENV, UI, call, csrf_of, ui_port


@pytest.fixture
def ui_daemon(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> Daemon:
    """A daemon over `wal_db` with its page on a loopback port, no credentials (the default)."""
    ui = {"enabled": True, "listen": "127.0.0.1:0"}
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"manual": {"keep": 5}, "pre_restore": {"keep": 10}},
        ui=ui,
    )
    return daemons.start(cfg)


def test_a_rebound_host_can_neither_read_nor_restore(ui_daemon: Daemon, wal_db: Path) -> None:
    """A forged Host gets 421 for the page (no CSRF token leaks) and for a restore POST with a
    matching Origin; the live database is untouched; the right Host still works."""
    archive = ui_daemon.request("backup")["archive"]
    with sqlite3.connect(wal_db) as conn:
        conn.execute("DELETE FROM items")
    conn.close()
    port = ui_port(ui_daemon)
    good_status, good_page = call(ui_daemon, "GET", "/", token=None)
    assert good_status == 200
    csrf = csrf_of(good_page)
    for evil in (f"attacker.example:{port}", "attacker.example", f"127.0.0.1:{port + 1}"):
        status, body = call(ui_daemon, "GET", "/", token=None, headers={"Host": evil})
        assert status == 421, (evil, body)
        assert "csrf" not in body
        form = {"archive": archive, "csrf": csrf, "confirm_name": archive}
        forged = {"Host": evil, "Origin": f"http://{evil}"}
        status, body = call(ui_daemon, "POST", "/restore", token=None, form=form, headers=forged)
        assert status == 421, (evil, body)
    assert row_count(wal_db) == 0
    ui_daemon.log.wait("ui_wrong_host_refused")
    assert [a["policy"] for a in ui_daemon.request("list")["archives"]] == ["manual"]


def test_an_origin_must_be_exactly_this_page(ui_daemon: Daemon) -> None:
    """With the right Host, an action whose Origin has another scheme, host or port is 403 and
    starts nothing; `http://` and the page's own host:port passes."""
    port = ui_port(ui_daemon)
    csrf = csrf_of(call(ui_daemon, "GET", "/", token=None)[1])
    form = {"policy": "manual", "csrf": csrf}
    for origin in (
        f"https://127.0.0.1:{port}",
        f"http://localhost:{port}",
        "http://attacker.example",
        "null",
    ):
        status, body = call(
            ui_daemon, "POST", "/backup", token=None, form=form, headers={"Origin": origin}
        )
        assert status == 403, (origin, body)
    assert ui_daemon.request("list")["archives"] == []
    ok = {"Origin": f"http://127.0.0.1:{port}"}
    assert call(ui_daemon, "POST", "/backup", token=None, form=form, headers=ok)[0] == 200
    assert len(ui_daemon.request("list")["archives"]) == 1


def test_allowed_hosts_and_localhost(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> None:
    """`localhost` at the bound port and each `ui.allowed_hosts` entry (a reverse proxy's name,
    whose Origin may be https) are answered; another name is not."""
    ui = {**UI, "allowed_hosts": ["backup.example.com"]}
    cfg = daemon_config(databases={"user": wal_db}, policies={"manual": {"keep": 5}}, ui=ui)
    d = daemons.start(cfg, env=ENV)
    port = ui_port(d)
    assert call(d, "GET", "/", headers={"Host": f"localhost:{port}"})[0] == 200
    assert call(d, "GET", "/", headers={"Host": "Backup.Example.com"})[0] == 200
    assert call(d, "GET", "/", headers={"Host": "other.example.com"})[0] == 421
    csrf = csrf_of(call(d, "GET", "/")[1])
    proxied = {"Host": "backup.example.com", "Origin": "https://backup.example.com"}
    status, _ = call(d, "POST", "/backup", form={"policy": "manual", "csrf": csrf}, headers=proxied)
    assert status == 200


def test_host_check_rules() -> None:
    """Which Host values each listen address answers, and that a malformed one is refused."""
    local = HostCheck(listen_host="127.0.0.1", port=8089)
    assert local.host_ok("127.0.0.1:8089") and local.host_ok("LOCALHOST:8089")
    assert not local.host_ok("127.0.0.2:8089") and not local.host_ok("127.0.0.1")
    assert not local.host_ok("127.0.0.1:8089:1") and not local.host_ok(None)
    v6 = HostCheck(listen_host="::1", port=80)
    assert v6.host_ok("[::1]") and v6.host_ok("[::1]:80") and not v6.host_ok("[::1]x")
    anywhere = HostCheck(listen_host="0.0.0.0", port=8089)  # noqa: S104
    assert anywhere.host_ok("192.0.2.7:8089") and not anywhere.host_ok("evil.example:8089")
    assert anywhere.host_ok("localhost:8089") and not v6.host_ok("localhost:8089")
    assert local.origin_ok("http://127.0.0.1:8089", "127.0.0.1:8089")
    assert not local.origin_ok("http://127.0.0.1:8089/", "127.0.0.1:8089")
