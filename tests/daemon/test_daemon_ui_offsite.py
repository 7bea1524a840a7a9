"""The web page's offsite view through a real daemon and a real file:// store: each archive's
copy (confirmed, damaged once the offsite verify fails it, pending while the store refuses)
and the policies whose copies lag, all from the socket's `offsite_status`."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support.daemon import Daemon, DaemonRunner
from support.databases import row_count
from support.ui import ENV, UI, call, csrf_of
from support.waiting import wait_until


def _offsite_cell(page: str, name: str) -> str:
    """The offsite column of ``name``'s row in the archives table."""
    table = page[page.index("<table id=archives>") :].split("</table>", maxsplit=1)[0]
    row = next(r for r in table.split("<tr>") if f"<code>{name}</code>" in r)
    return row.split("</td>")[6]


def _copy(d: Daemon, name: str) -> dict[str, Any] | None:
    copy: dict[str, Any] | None = d.request("offsite_status")["copies"].get(name)
    return copy


def test_each_archives_offsite_copy_is_on_the_page_and_a_damaged_one_says_why(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    tmp_path: Path,
) -> None:
    """An uploaded archive's copy is `confirmed` on the page as in `offsite_status`; once a
    byte of the object is flipped in the store, the scheduled offsite verify fails it and the
    page says `damaged` and why, naming the object."""
    store = tmp_path / "offsite"
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"manual": {"keep": 5}, "pre_restore": {"keep": 10}},
        offsite={"url": f"file://{store}", "verify_every": "1s"},
        ui=UI,
    )
    d = daemons.start(cfg, env=ENV)
    name = d.request("backup")["archive"]
    copy = wait_until(
        lambda: (c := _copy(d, name)) and c["state"] == "confirmed" and c, what="the upload"
    )
    obj = store / copy["object"]
    assert obj.is_file()
    _, page = call(d, "GET", "/")
    assert "<th>offsite copy</th>" in page
    assert _offsite_cell(page, name) == f'<td class=good title="{obj.name}">confirmed'
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0xFF
    obj.write_bytes(bytes(data))
    damaged = wait_until(
        lambda: (c := _copy(d, name)) and c["state"] == "damaged" and c, what="the verify"
    )
    assert obj.name in damaged["detail"]
    _, page = call(d, "GET", "/")
    cell = _offsite_cell(page, name)
    assert cell.startswith(f'<td class=bad title="{obj.name}">damaged: ') and obj.name in cell
    events = page[page.index("<table id=events>") :]
    assert "<td>offsite verify</td><td><code>-</code></td><td class=bad>failed</td>" in events


def test_pending_copies_and_a_lagging_policy_are_on_the_page(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    tmp_path: Path,
) -> None:
    """A store the daemon cannot write (its directory is a regular file): the archive's copy is
    `pending`, and past offsite.max_age the page's offsite section names the lagging policy
    as /healthz does."""
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the store should be\n")
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"manual": {"keep": 5}, "pre_restore": {"keep": 10}},
        offsite={"url": f"file://{blocked}/store", "max_age": "1s"},
        health={"interval": "1s"},
        ui=UI,
    )
    d = daemons.start(cfg, env=ENV)
    name = d.request("backup")["archive"]
    lagging = wait_until(lambda: d.request("offsite_status")["lagging"], what="the lag")
    assert "policy 'manual'" in lagging[0]
    _, page = call(d, "GET", "/")
    section = page[page.index("<h2>Offsite</h2>") :]
    assert "<p class=bad>lagging: policy &#x27;manual&#x27;" in section
    status = d.request("offsite_status")
    assert status["copies"][name] == {"state": "pending", "object": None, "detail": None}
    assert status["pending"] == 1 and "is not a directory" in status["last_error"]
    assert "is not a directory" in section.split("<table>")[0]
    assert _offsite_cell(page, name) == "<td class=plain>pending"


def _events(d: Daemon) -> str:
    _, page = call(d, "GET", "/")
    return page[page.index("<table id=events>") :].split("</table>", maxsplit=1)[0]


def test_offsite_failures_and_recoveries_are_recent_events(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    tmp_path: Path,
) -> None:
    """The page's recent events say when offsite uploads start failing and when the policy's
    copies start lagging, then, once the store can be written again, that both recovered."""
    blocked = tmp_path / "offsite"
    blocked.write_text("a file where the store's directory should be\n")
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"manual": {"keep": 5}, "pre_restore": {"keep": 10}},
        offsite={"url": f"file://{blocked}/store", "max_age": "1s"},
        health={"interval": "1s"},
        ui=UI,
    )
    d = daemons.start(cfg, env=ENV)
    d.request("backup")
    failing = "<td>offsite upload</td><td><code>-</code></td><td class=bad>failed</td>"
    lagging = "<td>offsite lag</td><td><code>manual</code></td><td class=bad>failed</td>"
    events = wait_until(
        lambda: (e := _events(d)) and failing in e and lagging in e and e, what="the failures"
    )
    assert "is not a directory" in events.split(failing)[1].split("</tr>")[0]
    blocked.unlink()
    (blocked / "store").mkdir(parents=True)
    d.request("backup")  # wakes the uploader: this pass succeeds
    upload_ok = "<td>offsite upload</td><td><code>-</code></td><td class=good>ok</td>"
    caught_up = "<td>offsite lag</td><td><code>manual</code></td><td class=good>ok</td>"
    events = wait_until(
        lambda: (e := _events(d)) and upload_ok in e and caught_up in e and e,
        what="the recoveries",
    )
    assert "recovered; it was: " in events.split(upload_ok)[1].split("</tr>")[0]
    assert events.index(caught_up) < events.index(lagging)  # newest first


def test_a_restore_from_an_offsite_copy_through_the_page(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    tmp_path: Path,
) -> None:
    """The local archive lost, its policy's newest copy offsite offers `restore…`: the plan
    (the dry run fetches and checks the copy) changes nothing, the typed name restores the
    live database from it and the page names the pre_restore archive."""
    store = tmp_path / "offsite"
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"manual": {"keep": 5}, "pre_restore": {"keep": 10}},
        offsite={"url": f"file://{store}"},
        ui=UI,
    )
    d = daemons.start(cfg, env=ENV)
    name = d.request("backup")["archive"]
    copy = wait_until(
        lambda: (c := _copy(d, name)) and c["state"] == "confirmed" and c, what="the upload"
    )
    for path in d.archives():
        path.unlink()  # the host lost its backups; the offsite copy is what is left
    with sqlite3.connect(wal_db) as conn:
        conn.execute("DELETE FROM items WHERE id > 7")
    conn.close()
    _, page = wait_until(
        lambda: (p := call(d, "GET", "/")) and "No archives yet." in p[1] and p, what="the loss"
    )
    newest = page[page.index("<table id=offsite-newest>") :].split("</table>", maxsplit=1)[0]
    assert f'<input type=hidden name="archive" value="{copy["object"]}">' in newest
    assert '<input type=hidden name="from" value="offsite">' in newest
    another = page[page.index("Another copy") :].split("</p>", maxsplit=1)[0]
    assert 'action="/restore/plan"' in another and "<input name=archive required" in another
    csrf = csrf_of(page)
    form = {"archive": copy["object"], "from": "offsite", "csrf": csrf}
    _, plan = call(d, "POST", "/restore/plan", form=form)
    assert f"from the offsite copy <code>{copy['object']}</code>" in plan, plan
    assert f"Type the archive name <code>{name}</code>" in plan and row_count(wal_db) == 7
    _, page = call(
        d,
        "POST",
        "/restore",
        form={"archive": name, "from": "offsite", "csrf": csrf, "confirm_name": name},
    )
    assert row_count(wal_db) == 100
    [safety] = [a for a in d.request("list")["archives"] if a["policy"] == "pre_restore"]
    assert f"<code id=pre-restore>{safety['name']}</code>" in page
    d.log.wait("ui_action", path="/restore", source="offsite")


def test_an_incremental_backups_offsite_copy_is_on_the_page(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    tmp_path: Path,
) -> None:
    """An incremental backup's row says `confirmed` once its manifest and packs are offsite, as
    `offsite_status` does."""
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"hourly": {"keep": 3, "mode": "incremental"}, "pre_restore": {"keep": 10}},
        offsite={"url": f"file://{tmp_path / 'offsite'}"},
        ui=UI,
    )
    d = daemons.start(cfg, env=ENV)
    name = d.request("backup", policy="hourly")["archive"]
    copy = wait_until(
        lambda: (c := _copy(d, name)) and c["state"] == "confirmed" and c, what="the upload"
    )
    _, page = call(d, "GET", "/")
    assert _offsite_cell(page, name) == f'<td class=good title="{copy["object"]}">confirmed'


def test_every_database_restores_from_its_newest_offsite_copy_through_the_page(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    tmp_path: Path,
) -> None:
    """Disaster recovery from the page: the local archives lost, `restore every database from
    its newest copy…` plans which copy restores each database (nothing changes), refuses
    anything typed but `latest`, then restores and names the pre_restore archive."""
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"manual": {"keep": 5}, "pre_restore": {"keep": 10}},
        offsite={"url": f"file://{tmp_path / 'offsite'}"},
        ui=UI,
    )
    d = daemons.start(cfg, env=ENV)
    d.request("backup")
    name = d.request("backup")["archive"]
    wait_until(lambda: (c := _copy(d, name)) and c["state"] == "confirmed" and c, what="the upload")
    for path in d.archives():
        path.unlink()
    with sqlite3.connect(wal_db) as conn:
        conn.execute("DELETE FROM items WHERE id > 5")
    conn.close()
    _, page = call(d, "GET", "/")
    csrf = csrf_of(page)
    assert "restore every database from its newest copy…" in page
    form = {"from": "offsite", "latest": "1", "csrf": csrf}
    _, plan = call(d, "POST", "/restore/plan", form=form)
    assert f"each database from its newest confirmed offsite copy (user from {name})" in plan
    assert "Type <code>latest</code> to confirm" in plan and row_count(wal_db) == 5
    _, page = call(d, "POST", "/restore", form={**form, "confirm_name": name})
    assert "type latest exactly to confirm; nothing was changed" in page
    assert row_count(wal_db) == 5
    _, page = call(d, "POST", "/restore", form={**form, "confirm_name": "latest"})
    assert row_count(wal_db) == 100
    [safety] = [a for a in d.request("list")["archives"] if a["policy"] == "pre_restore"]
    assert f"<code id=pre-restore>{safety['name']}</code>" in page
    assert f"Restored user from <code>{name}</code>" in page
