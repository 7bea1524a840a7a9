"""The web page in a real headless chromium against a real daemon: what an operator sees and
does, JavaScript (htmx) on."""

from __future__ import annotations

import fcntl
import http.client
import os
import shutil
import sqlite3
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from support.browser import chromium
from support.daemon import DaemonRunner
from support.databases import holding_readers_out, row_count
from support.ui import ENV, TOKEN, UI, ui_port
from support.waiting import wait_until

#: Set to a path to refresh the README's screenshot from this test (docs/ui.png).
SCREENSHOT_ENV = "UI_SCREENSHOT"


def test_browser_lists_restores_and_refuses(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    tmp_path: Path,
) -> None:
    """In chromium: a wrong token gets no page; the page lists the archives with their offsite
    copy; verify answers in place through htmx (no reload); a restore through the plan and the
    typed name changes the live database and shows the safety archive."""
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"manual": {"keep": 5}, "pre_restore": {"keep": 10}},
        offsite={"url": f"file://{tmp_path / 'offsite'}"},
        ui=UI,
    )
    d = daemons.start(cfg, env=ENV)
    archive = d.request("backup")["archive"]
    wait_until(lambda: d.request("offsite_status")["copies"].get(archive), what="the upload")
    url = f"http://127.0.0.1:{ui_port(d)}/"
    with chromium(token="not-the-token-0123456789") as browser:  # noqa: S106 - wrong on purpose
        mark = d.log.mark()
        browser.get(url)  # 401 asking for basic auth: chromium's password prompt, no page
        assert archive not in browser.page_source
        d.log.wait("ui_unauthorized", since=mark)
    with sqlite3.connect(wal_db) as conn:
        conn.execute("DELETE FROM items WHERE id > 40")
    conn.close()
    with chromium(token=TOKEN) as browser:
        browser.get(url)
        table = browser.find_element(By.ID, "archives")
        assert archive in table.text and "verified" in table.text and "confirmed" in table.text
        assert "offsite copy" in table.text
        wait_until(lambda: browser.execute_script("return !!window.htmx"), what="htmx loaded")
        swaps_503 = "return htmx.config.responseHandling.some(r => r.code === '503' && r.swap)"
        assert browser.execute_script(swaps_503)  # the page's config: a refusal is shown
        browser.set_window_size(1280, 1250)  # the whole page, archives and events included
        browser.save_screenshot(str(tmp_path / "ui.png"))
        if target := os.environ.get(SCREENSHOT_ENV):
            shutil.copyfile(tmp_path / "ui.png", target)
        browser.execute_script("window.notReloaded = true")
        verify = f"//tr[td/code[text()='{archive}']]//button[text()='verify']"
        browser.find_element(By.XPATH, verify).click()  # htmx: swapped in place, no reload
        wait_until(lambda: "is sound" in browser.page_source, what="the verify outcome")
        assert browser.execute_script("return window.notReloaded === true")
        table = browser.find_element(By.ID, "archives")
        row = table.find_element(By.XPATH, f".//tr[td/code[text()='{archive}']]")
        row.find_element(By.XPATH, ".//button[text()='restore…']").click()
        wait_until(lambda: "Type the archive name" in browser.page_source, what="restore plan")
        assert row_count(wal_db) == 40
        browser.find_element(By.NAME, "confirm_name").send_keys(archive)
        browser.find_element(By.XPATH, "//button[text()='Restore now']").click()
        safety = wait_until(
            lambda: browser.find_elements(By.ID, "pre-restore"), what="the safety archive"
        )[0].text
    assert row_count(wal_db) == 100
    listed = {a["name"]: a["policy"] for a in d.request("list")["archives"]}
    assert listed[safety] == "pre_restore"


@pytest.mark.slow
def test_a_restores_progress_shows_live_in_the_browser(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], big_db: Path
) -> None:
    """In chromium, while the restore of a ~200 MB database runs, the plan page shows its
    stages as they happen (htmx polls /progress), then the home page with the safety archive."""
    cfg = daemon_config(
        databases={"user": big_db},
        policies={"manual": {"keep": 5}, "pre_restore": {"keep": 10}},
        ui=UI,
    )
    d = daemons.start(cfg, env=ENV)
    archive = d.request("backup")["archive"]
    with chromium(token=TOKEN) as browser:
        browser.get(f"http://127.0.0.1:{ui_port(d)}/")
        wait_until(lambda: browser.execute_script("return !!window.htmx"), what="htmx loaded")
        row = f"//tr[td/code[text()='{archive}']]"
        browser.find_element(By.XPATH, f"{row}//button[text()='restore…']").click()
        wait_until(lambda: browser.find_elements(By.NAME, "confirm_name"), what="the plan")
        wait_until(lambda: browser.execute_script("return !!window.htmx"), what="htmx loaded")
        browser.find_element(By.NAME, "confirm_name").send_keys(archive)
        browser.find_element(By.XPATH, "//button[text()='Restore now']").click()
        wait_until(
            lambda: "<div>restore: " in browser.page_source, timeout=120, what="live progress"
        )
        wait_until(lambda: browser.find_elements(By.ID, "pre-restore"), timeout=300, what="the end")
        assert "<div>restore: " not in browser.page_source
    d.log.wait("ui_action", path="/restore")


class _EvilPage(BaseHTTPRequestHandler):
    """Another site's page that submits a form to the daemon's page as soon as it loads."""

    target = ""

    def do_GET(self) -> None:
        body = (
            f'<form id=f method=post action="{self.target}/backup">'
            "<input name=policy value=manual><input name=csrf value=guessed></form>"
            "<script>document.getElementById('f').submit()</script>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def test_a_forged_post_from_another_site_is_refused_in_the_browser(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> None:
    """A page of another origin makes the browser (which sends the operator's credentials)
    POST `Back up now`: the daemon answers 403 and no archive is written."""
    cfg = daemon_config(databases={"user": wal_db}, policies={"manual": {"keep": 5}}, ui=UI)
    d = daemons.start(cfg, env=ENV)
    _EvilPage.target = f"http://127.0.0.1:{ui_port(d)}"
    evil = ThreadingHTTPServer(("127.0.0.1", 0), _EvilPage)
    thread = threading.Thread(target=evil.serve_forever, daemon=True)
    thread.start()
    try:
        with chromium(token=TOKEN) as browser:
            browser.get(f"http://127.0.0.1:{evil.server_address[1]}/")
            wait_until(lambda: "refused" in browser.page_source, what="the daemon's answer")
            assert "CSRF" in browser.find_element(By.TAG_NAME, "body").text
    finally:
        evil.shutdown()
        evil.server_close()
        thread.join(10)
    assert d.request("list")["archives"] == []
    d.log.wait("ui_forged_post_refused", path="/backup")


def test_the_page_works_without_javascript_after_the_browsers_password_prompt(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
) -> None:
    """A token-only page asks a browser for basic auth (a browser cannot send a bearer token),
    and `ui.user` with the token as password passes. In chromium with JavaScript off, the page
    lists the archive, `Back up now` answers with the whole page, and a restore through its
    plan and the typed name changes the live database and shows the safety archive."""
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"manual": {"keep": 5}, "pre_restore": {"keep": 10}},
        ui=UI,
    )
    d = daemons.start(cfg, env=ENV)
    first = d.request("backup")["archive"]
    conn = http.client.HTTPConnection("127.0.0.1", ui_port(d), timeout=60)
    conn.request("GET", "/")
    challenge = conn.getresponse()
    assert challenge.status == 401
    assert challenge.getheader("WWW-Authenticate", "").startswith('Basic realm="backup-sidecar"')
    conn.close()
    with sqlite3.connect(wal_db) as db:
        db.execute("DELETE FROM items WHERE id > 3")
    db.close()
    url = f"http://127.0.0.1:{ui_port(d)}/"
    with chromium(token=None, basic=("admin", "wrong-" + TOKEN), javascript=False) as browser:
        mark = d.log.mark()
        browser.get(url)  # (chromium shows its password prompt: no page)
        assert first not in browser.page_source
        d.log.wait("ui_unauthorized", since=mark)
    with chromium(token=None, basic=("admin", TOKEN), javascript=False) as browser:
        browser.get(url)
        assert first in browser.find_element(By.ID, "archives").text
        browser.find_element(By.XPATH, "//button[text()='Back up now']").click()
        outcome = wait_until(
            lambda: "Backed up:" in (t := browser.find_element(By.ID, "outcome").text) and t,
            what="the backup's page",
        )
        assert len(d.request("list")["archives"]) == 2, outcome
        row = f"//tr[td/code[text()='{first}']]"
        browser.find_element(By.XPATH, f"{row}//button[text()='restore…']").click()
        wait_until(lambda: browser.find_elements(By.NAME, "confirm_name"), what="the plan")
        assert row_count(wal_db) == 3
        browser.find_element(By.NAME, "confirm_name").send_keys(first)
        browser.find_element(By.XPATH, "//button[text()='Restore now']").click()
        safety = wait_until(
            lambda: browser.find_elements(By.ID, "pre-restore"), what="the safety archive"
        )[0].text
        assert browser.execute_script("return typeof window.htmx") == "undefined"
    assert row_count(wal_db) == 100
    assert {a["name"]: a["policy"] for a in d.request("list")["archives"]}[safety] == "pre_restore"


@pytest.mark.slow
def test_a_backups_and_a_verifys_progress_show_live_in_the_browser(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], big_db: Path
) -> None:
    """In chromium, while `Back up now` of a ~200 MB database runs, the home page shows its
    stages as they happen (htmx polls /progress), then the new archive; the same for its
    verify. The application holds the database while the backup starts, and a lock on the
    archive (a prune's) holds the verify, so each one's progress is on the page for as long as
    the test takes to see it (a verify that finished between two polls, on CI's machine,
    failed the test now and then)."""
    cfg = daemon_config(
        databases={"user": big_db},
        policies={"manual": {"keep": 5}, "pre_restore": {"keep": 10}},
        ui=UI,
    )
    d = daemons.start(cfg, env=ENV)
    with chromium(token=TOKEN) as browser:
        browser.get(f"http://127.0.0.1:{ui_port(d)}/")
        wait_until(lambda: browser.execute_script("return !!window.htmx"), what="htmx loaded")
        with holding_readers_out(big_db):  # the backup waits in its snapshot's busy retries
            browser.find_element(By.XPATH, "//button[text()='Back up now']").click()
            wait_until(lambda: "<div>backup: " in browser.page_source, timeout=120,
                       what="progress")  # fmt: skip
        wait_until(lambda: "Backed up:" in browser.page_source, timeout=300, what="the backup")
        [(archive, path)] = [(a["name"], a["path"]) for a in d.request("list")["archives"]]
        verify = f"//tr[td/code[text()='{archive}']]//button[text()='verify']"
        with Path(path).open("rb") as held:  # a prune's lock: the verify waits to read it
            fcntl.flock(held.fileno(), fcntl.LOCK_EX)
            browser.find_element(By.XPATH, verify).click()
            wait_until(lambda: "<div>verify: " in browser.page_source, timeout=120,
                       what="progress")  # fmt: skip
        wait_until(lambda: "is sound" in browser.page_source, timeout=300, what="the verify")
        assert "<div>verify: " not in browser.page_source
