"""The web page's actions beyond the first slice, through a real daemon over real HTTP: the
restore of an incremental backup (page store), and actions refused while the daemon stops."""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from support.daemon import Daemon, DaemonRunner
from support.databases import holding_database_lock, make_db, row_count
from support.ui import ENV, UI, call, csrf_of


def _row_of(page: str, name: str) -> str:
    """The archives table's row of ``name``."""
    table = page[page.index("<table id=archives>") :].split("</table>", maxsplit=1)[0]
    return next(row for row in table.split("<tr>") if f"<code>{name}</code>" in row)


def test_an_incremental_backup_restores_through_the_page(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> None:
    """An incremental backup's row offers `restore…` like an archive's; its plan changes
    nothing, the typed name restores the live database from the page store and the page names
    the pre_restore archive that undoes it."""
    policies = {"hourly": {"keep": 3, "mode": "incremental"}, "pre_restore": {"keep": 10}}
    d = daemons.start(daemon_config(databases={"user": wal_db}, policies=policies, ui=UI), env=ENV)
    name = d.request("backup", policy="hourly")["archive"]
    with sqlite3.connect(wal_db) as conn:
        conn.execute("DELETE FROM items WHERE id > 10")
    conn.close()
    _, page = call(d, "GET", "/")
    row = _row_of(page, name)
    assert "<td>incremental</td>" in row and 'action="/restore/plan"' in row
    csrf = csrf_of(page)
    _, plan = call(d, "POST", "/restore/plan", form={"archive": name, "csrf": csrf})
    assert "Type the archive name" in plan and f"<code>{name}</code>" in plan
    assert row_count(wal_db) == 10
    right = {"archive": name, "csrf": csrf, "confirm_name": name}
    _, page = call(d, "POST", "/restore", form=right)
    assert row_count(wal_db) == 100
    [safety] = [a for a in d.request("list")["archives"] if a["policy"] == "pre_restore"]
    assert f"<code id=pre-restore>{safety['name']}</code>" in page
    assert f"Restored user from <code>{name}</code>" in page
    events = page[page.index("<table id=events>") :]
    assert (
        f"<code>hourly: {name}</code></td><td class=good>ok</td><td>asked for; incremental: user "
        in events
    )


def _stopping_daemon(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> Daemon:
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"manual": {"keep": 5}, "pre_restore": {"keep": 10}},
        grace_period="5m",
        ui=UI,
    )
    return daemons.start(cfg, env=ENV)


def test_actions_are_refused_while_the_daemon_stops(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> None:
    """After SIGTERM, while a socket backup still runs in the grace period, every action of
    the page is refused with 503 and one line saying the daemon is shutting down (nothing
    starts: no second archive, no restore); the page itself still reads; the running backup
    finishes and the daemon exits 0."""
    d = _stopping_daemon(daemons, daemon_config, wal_db)
    first = d.request("backup")["archive"]
    csrf = csrf_of(call(d, "GET", "/")[1])
    with ThreadPoolExecutor(1) as pool:
        with holding_database_lock(d.backup_dir, "user"):
            mark = d.log.mark()
            running = pool.submit(d.request, "backup", wait=True)
            d.log.wait("control_request", op="backup", since=mark)
            d.signal(signal.SIGTERM)
            d.log.wait("daemon_stopping", since=mark)
            for path, form in (
                ("/backup", {"policy": "manual"}),
                ("/verify", {"archive": first}),
                ("/restore/plan", {"archive": first}),
                ("/restore", {"archive": first, "confirm_name": first}),
            ):
                status, page = call(d, "POST", path, form={**form, "csrf": csrf})
                assert status == 503, (path, page)
                assert "the daemon is shutting down; nothing was started" in page
                assert "<table id=archives>" in page  # the page, with the refusal on top
            assert call(d, "GET", "/")[0] == 200
            assert not running.done()
        second = running.result(timeout=120)["archive"]
    assert d.wait_exit(timeout=120) == 0
    assert second != first and len(d.archives("manual")) == 2
    assert not d.archives("pre_restore")
    assert len(d.log.find("ui_action_refused", reason="stopping")) == 4
    assert not d.log.find("ui_action")


def test_the_plan_restores_only_the_databases_left_checked(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    tmp_path: Path,
) -> None:
    """An archive of two databases: the plan offers each (checked); none checked is refused and
    changes nothing; only `user` checked restores `user` and leaves `arrow` as it is."""
    arrow = make_db(tmp_path / "arrow" / "arrow.db", wal=True, rows=50)
    cfg = daemon_config(
        databases={"user": wal_db, "arrow": arrow},
        policies={"manual": {"keep": 5}, "pre_restore": {"keep": 10}},
        ui=UI,
    )
    d = daemons.start(cfg, env=ENV)
    name = d.request("backup")["archive"]
    for path in (wal_db, arrow):
        with sqlite3.connect(path) as conn:
            conn.execute("DELETE FROM items WHERE id > 2")
        conn.close()
    csrf = csrf_of(call(d, "GET", "/")[1])
    _, plan = call(d, "POST", "/restore/plan", form={"archive": name, "csrf": csrf})
    for db in ("user", "arrow"):
        assert f'<input type=checkbox name=db value="{db}" checked>' in plan
    assert "replaces the live databases arrow, user." in plan
    form = {"archive": name, "csrf": csrf, "confirm_name": name, "pick": "1"}
    _, page = call(d, "POST", "/restore", form=form)
    assert "choose at least one database to restore; nothing was changed" in page
    assert (row_count(wal_db), row_count(arrow)) == (2, 2)
    _, page = call(d, "POST", "/restore", form={**form, "db": "user"})
    assert (row_count(wal_db), row_count(arrow)) == (100, 2)
    assert f"Restored user from <code>{name}</code>" in page
