"""GFS retention in a real daemon: a policy with `keep_last`/`keep_daily`/`keep_monthly`
read in the configured zone prunes real archives after a socket backup, while a writer keeps
writing; `prune --dry-run` (CLI, socket and `ctl`) names the rule that keeps each archive."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backup_sidecar.archiver import DatabaseSpec, create_backup
from support.daemon import DaemonRunner
from support.databases import Writer
from support.waiting import wait_until

#: Written in this order (creation sequence 1..5), dated in 2020: D is 2020-02-02 in UTC but
#: 2020-02-01 22:00 in New York.
DATED = {
    "A": datetime(2020, 1, 1, 12, 0, tzinfo=UTC),
    "B": datetime(2020, 1, 15, 12, 0, tzinfo=UTC),
    "C": datetime(2020, 2, 1, 12, 0, tzinfo=UTC),
    "D": datetime(2020, 2, 2, 3, 0, tzinfo=UTC),
    "E": datetime(2020, 2, 2, 12, 0, tzinfo=UTC),
}
RULES = {"keep_last": 1, "keep_daily": 2, "keep_monthly": 3}


def test_gfs_policy_prunes_real_archives_by_local_buckets(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    backup_dir: Path,
    writer_process: Callable[..., Writer],
) -> None:
    """Before the backup, the dry run keeps E (last 1, daily 2020-02-02, monthly 2020-02), D
    (daily 2020-02-01: New York time; in UTC it shares E's day), B (monthly 2020-01) and A
    (monthly 2020-01 (oldest): counts left) and would delete C only, and deletes nothing. A
    socket backup into the policy then prunes to the new archive, E and B: counting back from
    the newest, the daily count is spent on today and 2020-02-02 and the monthly one on this
    month, 2020-02 and 2020-01."""
    writer = writer_process(wal_db, rate=50.0)
    names = {}
    for key, when in DATED.items():
        info = create_backup([DatabaseSpec("user", wal_db)], backup_dir=backup_dir,
                             name=f"gfs_{when:%Y%m%d_%H%M%S}", policy="gfs", now=when)  # fmt: skip
        names[key] = info.name
    config = daemon_config(
        databases={"user": wal_db}, policies={"gfs": RULES}, timezone="America/New_York"
    )
    d = daemons.start(config)

    dry = d.cli("prune", "--policy", "gfs", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["deleted"] == [names["C"]]
    assert {k["archive"]: k["reasons"] for k in report["kept"]} == {
        names["E"]: ["last 1", "daily 2020-02-02", "monthly 2020-02"],
        names["D"]: ["daily 2020-02-01"],
        names["B"]: ["monthly 2020-01"],
        names["A"]: ["monthly 2020-01 (oldest)"],
    }
    over_socket = d.request("prune", policy="gfs", dry_run=True)
    assert over_socket["deleted"] == report["deleted"]
    assert over_socket["kept"] == report["kept"]
    text = d.cli("prune", "--policy", "gfs", "--dry-run")
    assert f"would keep {backup_dir / names['D']}.tar.gz: daily 2020-02-01" in text.stdout
    assert f"would delete {backup_dir / names['C']}.tar.gz" in text.stdout
    ctl = d.ctl("prune", "--policy", "gfs", "--dry-run")
    assert ctl.returncode == 0, ctl.stderr
    expected = (
        f"archive={names['E']}  policy=gfs  reasons=last 1, daily 2020-02-02, monthly 2020-02"
    )
    assert f"  {expected}" in ctl.stdout.splitlines()
    assert len(d.archives("gfs")) == 5

    new = d.request("backup", policy="gfs")["archive"]
    assert sorted(p.name for p in d.archives("gfs")) == sorted(
        f"{n}.tar.gz" for n in (names["B"], names["E"], new)
    )
    wait_until(  # logged before the answer; this test's reader may not have read them yet
        lambda: (
            {e["archive"] for e in d.log.find("archive_pruned")}
            == {names["A"], names["C"], names["D"]}
        ),
        what="archive_pruned logged for A, C and D",
    )
    assert writer.stop()["errors"] == 0
