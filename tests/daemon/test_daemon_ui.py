"""The web page of a real daemon over real HTTP: it shows what the control socket knows, refuses
a wrong token and forged POSTs, and its actions run through the control socket's handler."""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backup_sidecar.service.ui_html import human_size
from support.cli import run_cli
from support.daemon import Daemon, DaemonRunner
from support.databases import row_count
from support.ui import ENV, UI, call, csrf_of
from support.waiting import wait_until


@pytest.fixture
def ui_daemon(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> Daemon:
    """A daemon over `wal_db` with its page on a loopback port behind a bearer token."""
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"manual": {"keep": 5}, "pre_restore": {"keep": 10}},
        ui=UI,
    )
    return daemons.start(cfg, env=ENV)


def test_page_lists_the_archives_the_socket_lists(ui_daemon: Daemon) -> None:
    """Every archive the socket's `list` returns is on the page, with its policy and status."""
    first = ui_daemon.request("backup")["archive"]
    status, page = call(ui_daemon, "GET", "/")
    assert status == 200
    names = [a["name"] for a in ui_daemon.request("list")["archives"]]
    assert names == [first]
    assert f"<code>{first}</code>" in page
    assert "verified" in page and "healthy" in page
    assert "/static/htmx-2.0.4.min.js" in page and "cdn" not in page.lower()


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789abcdef", ""])
def test_a_wrong_or_missing_token_is_refused(ui_daemon: Daemon, token: str | None) -> None:
    """Without the right token nothing is shown nor done: 401 for pages, assets and actions."""
    for method, path in (("GET", "/"), ("GET", "/static/htmx-2.0.4.min.js"), ("POST", "/backup")):
        status, body = call(ui_daemon, method, path, token=token, form={"policy": "manual"})
        assert status == 401, (method, path, body)
        assert "archive" not in body
    assert ui_daemon.request("list")["archives"] == []


def test_forged_posts_are_refused_and_change_nothing(ui_daemon: Daemon) -> None:
    """A POST without the page's CSRF token, with a wrong one, or from another origin is
    refused (403) and starts no backup."""
    _, page = call(ui_daemon, "GET", "/")
    good = csrf_of(page)
    forged: list[tuple[dict[str, str], dict[str, str]]] = [
        ({"policy": "manual"}, {}),
        ({"policy": "manual", "csrf": "0" * 64}, {}),
        ({"policy": "manual", "csrf": good}, {"Origin": "http://evil.example"}),
    ]
    for form, headers in forged:
        status, body = call(ui_daemon, "POST", "/backup", form=form, headers=headers)
        assert status == 403, body
        assert "CSRF" in body
    assert ui_daemon.request("list")["archives"] == []
    ui_daemon.log.wait("ui_forged_post_refused")


def test_backup_and_verify_through_the_page(ui_daemon: Daemon) -> None:
    """`Back up now` writes a verified archive the socket lists; `verify` reports it sound; a
    missing archive is one line on the page, not a crash."""
    csrf = csrf_of(call(ui_daemon, "GET", "/")[1])
    status, page = call(ui_daemon, "POST", "/backup", form={"policy": "manual", "csrf": csrf})
    assert status == 200
    [entry] = ui_daemon.request("list")["archives"]
    assert entry["verified"] and f"Backed up: <code>{entry['name']}</code>" in page
    _, page = call(ui_daemon, "POST", "/verify", form={"archive": entry["name"], "csrf": csrf})
    assert f"Verified: <code>{entry['name']}</code> is sound" in page
    _, page = call(ui_daemon, "POST", "/verify", form={"archive": "nope", "csrf": csrf})
    assert "<div class=bad role=alert>no archive named &#x27;nope&#x27;</div>" in page


def test_restore_through_the_page_needs_the_typed_name(ui_daemon: Daemon, wal_db: Path) -> None:
    """The plan changes nothing; a mistyped name changes nothing; the typed name restores the
    live database and the page names the pre_restore archive that undoes it."""
    archive = ui_daemon.request("backup")["archive"]
    with sqlite3.connect(wal_db) as conn:
        conn.execute("DELETE FROM items")
    conn.close()
    csrf = csrf_of(call(ui_daemon, "GET", "/")[1])
    _, plan = call(ui_daemon, "POST", "/restore/plan", form={"archive": archive, "csrf": csrf})
    assert "Type the archive name" in plan and row_count(wal_db) == 0
    wrong = {"archive": archive, "csrf": csrf, "confirm_name": archive[:-1]}
    _, page = call(ui_daemon, "POST", "/restore", form=wrong)
    assert "nothing was changed" in page and row_count(wal_db) == 0
    right = {"archive": archive, "csrf": csrf, "confirm_name": archive}
    _, page = call(ui_daemon, "POST", "/restore", form=right)
    assert row_count(wal_db) == 100
    [safety] = ui_daemon.request("list")["archives"][0:1]
    assert safety["policy"] == "pre_restore"
    assert f"<code id=pre-restore>{safety['name']}</code>" in page


def test_a_missing_token_variable_stops_the_start_in_one_line(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> None:
    """A `ui.token_env` naming an unset variable: the daemon does not start (no open page), and
    says which variable in one line."""
    cfg = daemon_config(databases={"user": wal_db}, policies={"manual": {"keep": 1}}, ui=UI)
    d = daemons.start(cfg, started_ok=False)
    code = d.wait_exit(timeout=30)
    errors = [line for line in d.log.raw if not line.startswith("{")]
    assert code != 0 and not d.log.find("daemon_started")
    assert len(errors) == 1, d.log.raw
    assert "environment UI_TOKEN: ui.token_env" in errors[0]


def test_basic_auth_with_a_hash_from_the_environment(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> None:
    """Basic auth against the hash `config hash-password` made: the right password gets the
    page, a wrong one a 401 asking for basic auth."""
    made = run_cli("config", "hash-password", input="correct horse\n")
    ui = {"enabled": True, "listen": "127.0.0.1:0", "user": "ops", "password_hash_env": "UI_HASH"}
    cfg = daemon_config(databases={"user": wal_db}, policies={"manual": {"keep": 1}}, ui=ui)
    d = daemons.start(cfg, env={"UI_HASH": made.stdout.strip()})

    def basic(password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()}

    assert call(d, "GET", "/", token=None, headers=basic("correct horse"))[0] == 200
    assert call(d, "GET", "/", token=None, headers=basic("wrong horse"))[0] == 401


def test_status_shows_each_database_check_as_the_socket_reports_it(
    ui_daemon: Daemon, wal_db: Path
) -> None:
    """The socket's `status` carries the health watcher's last check of each database (health,
    size, WAL, free pages) and the page shows those very numbers."""
    checks = wait_until(
        lambda: ui_daemon.request("status")["checks"].get("user"), what="the first check"
    )
    assert checks["healthy"] is True and checks["error"] is None
    assert checks["size_bytes"] == wal_db.stat().st_size
    assert checks["wal_size_bytes"] == Path(f"{wal_db}-wal").stat().st_size
    assert checks["freelist_count"] == 0 and checks["page_count"] > 0
    _, page = call(ui_daemon, "GET", "/")
    row = page[page.index("<table id=databases>") :].split("</table>")[0]
    assert "<span class=good>healthy</span>" in row
    assert f"<td>{human_size(checks['size_bytes'])}</td>" in row
    assert "<td>0 (0.0%)</td>" in row


@pytest.mark.parametrize("length", ["abc", "-5", "99999999"])
def test_a_bad_content_length_is_refused_not_a_crash(ui_daemon: Daemon, length: str) -> None:
    """A POST declaring a malformed, negative or huge body length is one 413 line; the daemon
    logs no crash (the teardown fails on a ui_request_failed) and goes on answering."""
    csrf = csrf_of(call(ui_daemon, "GET", "/")[1])
    status, body = call(ui_daemon, "POST", "/backup", headers={"Content-Length": length})
    assert status == 413 and "refused" in body
    assert call(ui_daemon, "GET", "/")[0] == 200 and csrf


def test_offsite_state_is_on_the_page(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    tmp_path: Path,
) -> None:
    """With an offsite section the page shows the store, the lease verdict and each policy's
    newest confirmed copy, from the socket's offsite_status."""
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"manual": {"keep": 5}, "pre_restore": {"keep": 10}},
        offsite={"url": f"file://{tmp_path / 'offsite'}"},
        ui=UI,
    )
    d = daemons.start(cfg, env=ENV)
    d.request("backup")
    wait_until(lambda: d.request("offsite_status")["newest"].get("manual"), what="an upload")
    _, page = call(d, "GET", "/")
    section = page[page.index("<h2>Offsite</h2>") :]
    assert f"file://{tmp_path / 'offsite'}" in section and "writable" in section
    assert "<td>manual</td>" in section


def test_recent_events_show_backups_and_restores_newest_first(ui_daemon: Daemon) -> None:
    """The page lists what the jobs published since the start, newest first: the backup asked
    for on the socket, then the restore done through the page."""
    archive = ui_daemon.request("backup")["archive"]
    csrf = csrf_of(call(ui_daemon, "GET", "/")[1])
    right = {"archive": archive, "csrf": csrf, "confirm_name": archive}
    call(ui_daemon, "POST", "/restore", form=right)
    _, page = call(ui_daemon, "GET", "/")
    events = page[page.index("<table id=events>") :].split("</table>")[0]
    restore = events.index(f"<td>restore</td><td><code>{archive}</code></td><td class=good>ok")
    backup = events.index(f"<td>backup</td><td><code>manual: {archive}</code></td><td class=good>")
    assert restore < backup
