"""The page's restore form goes through the socket's validation (issue 17): a field the socket
refuses is refused on the page in one line, never ignored nor read as another request."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support.daemon import DaemonRunner
from support.databases import row_count
from support.ui import ENV, UI, call, csrf_of


def test_restore_fields_the_socket_refuses_are_refused(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> None:
    """`from=elsewhere` is not read as local, `latest=1` with an archive does not drop the
    archive, `latest=yes` is not read as false: each plan and each confirmed restore answers
    the socket's bad-request line, and the live database is untouched."""
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"manual": {"keep": 5}, "pre_restore": {"keep": 10}},
        ui=UI,
    )
    d = daemons.start(cfg, env=ENV)
    archive = d.request("backup")["archive"]
    with sqlite3.connect(wal_db) as conn:
        conn.execute("DELETE FROM items")
    conn.close()
    csrf = csrf_of(call(d, "GET", "/")[1])
    cases = [
        ({"from": "elsewhere", "archive": archive}, "from"),
        ({"from": "offsite", "latest": "1", "archive": archive}, "not both"),
        ({"from": "offsite", "latest": "yes", "archive": archive}, "latest"),
        ({"latest": "1"}, "latest"),
    ]
    for fields, says in cases:
        for path, extra in (("/restore/plan", {}), ("/restore", {"confirm_name": archive})):
            _, page = call(d, "POST", path, form={**fields, **extra, "csrf": csrf})
            assert "<div class=bad role=alert>bad restore request" in page, (fields, path)
            line = page.split("<div class=bad role=alert>", 1)[1].split("</div>", 1)[0]
            assert says in line, (fields, path, line)
            assert "Type the archive name" not in page
    assert row_count(wal_db) == 0
    assert [a["policy"] for a in d.request("list")["archives"]] == ["manual"]
    # the page's own forms still work: a local plan and its restore
    _, plan = call(d, "POST", "/restore/plan", form={"archive": archive, "csrf": csrf})
    assert "Type the archive name" in plan
