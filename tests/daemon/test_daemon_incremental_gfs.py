"""GFS retention of an incremental policy in a real daemon: a chain written over two months,
`prune --dry-run` (CLI and socket) naming the rule that keeps each backup, the prune after a
socket backup deleting the chain's base and middles by calendar buckets while a writer keeps
writing, and a kept backup restoring through the socket to exactly its rows."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backup_sidecar import jobs
from support.daemon import DaemonRunner
from support.databases import Writer, row_count
from support.incremental import incremental_runtime, manifests
from support.waiting import wait_until

#: Written in this order (creation sequence 1..6), one chain: A is its base.
DATED = {
    "A": datetime(2020, 1, 10, 12, 0, tzinfo=UTC),
    "B": datetime(2020, 1, 20, 12, 0, tzinfo=UTC),
    "C": datetime(2020, 2, 5, 9, 0, tzinfo=UTC),
    "D": datetime(2020, 2, 5, 18, 0, tzinfo=UTC),
    "E": datetime(2020, 2, 6, 8, 0, tzinfo=UTC),
    "F": datetime(2020, 2, 6, 20, 0, tzinfo=UTC),
}
POLICY = {"mode": "incremental", "keep_last": 1, "keep_daily": 2, "keep_monthly": 2}


def _add_rows(db: Path, rows: int) -> None:
    conn = sqlite3.connect(db, timeout=30)
    with conn:
        conn.executemany("INSERT INTO items(body) VALUES (?)", [("more",)] * rows)
    conn.close()


def _at(rt: jobs.Runtime, when: datetime) -> jobs.Runtime:
    """``rt`` with its clock stopped at ``when``."""
    return dataclasses.replace(rt, clock=lambda: when)


def test_an_incremental_gfs_policy_prunes_its_chain_by_buckets(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    backup_dir: Path,
    writer_process: Callable[..., Writer],
) -> None:
    """Six incremental backups dated January and February 2020 (rows added before each). The
    dry run keeps F (last 1, daily 2020-02-06, monthly 2020-02), D (daily 2020-02-05) and B
    (monthly 2020-01), would delete A, C and E, and deletes nothing; the socket and the CLI
    answer alike. A socket backup into the policy (today) then prunes to the new backup and
    F (the daily and monthly counts spent on today and 2020-02-06 / this month and 2020-02),
    deleting the chain's base A and B to E; F verifies and restores through the socket to
    exactly its rows. (Before, the daemon refused such a policy at load.)"""
    rt = incremental_runtime(backup_dir, {"user": wal_db}, policy="gfs")
    names: dict[str, str] = {}
    rows: dict[str, int] = {}
    for key, when in DATED.items():
        _add_rows(wal_db, 200)
        rows[key] = row_count(wal_db)
        names[key] = jobs.run_backup(_at(rt, when), policy="gfs").name
    writer = writer_process(wal_db, rate=50.0)
    config = daemon_config(
        databases={"user": wal_db}, policies={"gfs": POLICY, "pre_restore": {"keep": 10}}
    )
    d = daemons.start(config)

    dry = d.cli("prune", "--policy", "gfs", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert sorted(report["deleted"]) == sorted(names[k] for k in "ACE")
    assert {k["archive"]: k["reasons"] for k in report["kept"]} == {
        names["F"]: ["last 1", "daily 2020-02-06", "monthly 2020-02"],
        names["D"]: ["daily 2020-02-05"],
        names["B"]: ["monthly 2020-01"],
    }
    over_socket = d.request("prune", policy="gfs", dry_run=True)
    assert sorted(over_socket["deleted"]) == sorted(report["deleted"])
    assert over_socket["kept"] == report["kept"]
    assert manifests(backup_dir, "user") == sorted(names.values())

    new = str(d.request("backup", policy="gfs")["archive"])
    assert manifests(backup_dir, "user") == sorted([names["F"], new])
    wait_until(
        lambda: {e["archive"] for e in d.log.find("archive_pruned")} == {names[k] for k in "ABCDE"},
        what="archive_pruned logged for A to E",
    )
    d.log.wait("page_gc_completed")
    assert d.request("verify", archive=names["F"])["kind"] == "incremental"
    assert writer.stop()["errors"] == 0
    result = d.request("restore", archive=names["F"], confirm=True)
    assert result["restored"] == ["user"] and result["pre_restore_archive"]
    assert row_count(wal_db) == rows["F"]
