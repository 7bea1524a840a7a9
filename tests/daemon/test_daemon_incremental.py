"""An incremental policy in the real daemon: socket backups into the page store while a writer
commits, retention after each that deletes the chain's base and middle, and restores of the
later backups through the socket."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backup_sidecar.control import ControlError
from support.archives import gnu_tar_names
from support.daemon import DaemonRunner
from support.databases import Writer, row_count
from support.metrics import sample
from support.waiting import wait_until


def _add_rows(db: Path, rows: int) -> None:
    conn = sqlite3.connect(db, timeout=30)
    with conn:
        conn.executemany("INSERT INTO items(body) VALUES (?)", [("more",)] * rows)
    conn.close()


def test_pruning_a_chains_base_and_middle_leaves_the_later_backups_restorable(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    writer_process: Callable[..., Writer],
) -> None:
    """Four socket backups of an incremental policy with keep 2, rows added before each and a
    writer committing throughout: the prune after each leaves the two newest (the first two,
    the chain's base and middle, deleted with their unused packs collected), and each kept
    one verifies and restores through the socket to exactly its rows."""
    policies = {"hourly": {"keep": 2, "mode": "incremental"}, "pre_restore": {"keep": 10}}
    d = daemons.start(daemon_config(databases={"user": wal_db}, policies=policies))
    writer = writer_process(wal_db, rate=50.0)
    names, counts = [], []
    for _ in range(4):
        _add_rows(wal_db, 300)
        counts.append(row_count(wal_db))
        names.append(str(d.request("backup", policy="hourly")["archive"]))
    # Four in one second are named X, X-2, X-3, then X again once the prune deleted the first
    # (as archives are: a name is unique among the backups that exist).
    assert len(set(names[2:])) == 2
    listed = d.request("list")["archives"]
    assert [a["name"] for a in listed if a["kind"] == "incremental"] == [names[3], names[2]]
    assert json.loads(d.cli("list", "--json").stdout) == listed
    manifests = d.backup_dir / "pages" / "user" / "manifests"
    assert sorted(p.stem for p in manifests.glob("*.json")) == sorted(names[2:])
    d.log.wait("page_gc_completed")
    for name, rows in ((names[2], counts[2]), (names[3], counts[3])):
        assert d.request("verify", archive=name)["kind"] == "incremental"
        result = d.request("restore", archive=name, confirm=True)
        assert result["restored"] == ["user"] and result["pre_restore_archive"]
        assert row_count(wal_db) == rows
    assert writer.stop()["errors"] == 0


def test_an_incremental_policy_keeps_its_last_success_and_is_not_overdue(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> None:
    """A scheduled incremental policy with a max_backup_age: its catch-up backup at start is
    its last success, and the health check every second keeps it (before, the watcher found
    no archive of the policy, logged last_success_lost, reset the metric to 0, and /healthz
    said overdue); the archives gauge counts it, and the chain-head check after it verifies
    it (no verified backup yet: due) and counts it; the socket's `export` writes it as a
    standalone archive."""
    policies = {"hourly": {"every": "1h", "keep": 3, "mode": "incremental"}}
    cfg = daemon_config(
        databases={"user": wal_db}, policies=policies, health={"max_backup_age": {"hourly": "1h"}}
    )
    d = daemons.start(cfg)
    done = d.log.wait("backup_completed", policy="hourly")
    assert done["kind"] == "incremental"
    wal_size = "backup_sidecar_database_wal_size_bytes"
    wal = wal_db.with_name(wal_db.name + "-wal")
    holder = sqlite3.connect(wal_db)  # keeps the -wal file (the last close removes it)
    holder.execute("SELECT count(*) FROM items").fetchone()
    for _ in range(2):  # two health checks after the backup: each saw the -wal grow
        _add_rows(wal_db, 500)
        target = float(wal.stat().st_size)
        wait_until(
            lambda: sample(d.scrape(), wal_size, database="user") == target,  # noqa: B023
            what="a health check after the backup",
        )
    name = "backup_sidecar_backup_last_success_timestamp_seconds"
    assert (sample(d.scrape(), name, policy="hourly") or 0) > 0
    # The archives gauge counts the policy's incremental backup (it read 0: archives only).
    assert sample(d.scrape(), "backup_sidecar_archives", policy="hourly") == 1
    # No backup of the policy was verified: the head check after the backup verified it.
    checked = d.log.wait("chain_head_verified", policy="hourly")
    assert checked["archive"] == done["archive"]
    checks = "backup_sidecar_incremental_head_checks_total"
    assert sample(d.scrape(), checks, policy="hourly", result="success") == 1
    listed = d.request("list")["archives"]
    assert [(a["name"], a["status"]) for a in listed] == [(done["archive"], "verified")]
    # The socket's export: a standalone archive GNU tar reads, never replacing a file.
    out = wal_db.parent / "exported.tar.gz"
    result = d.request("export", archive=done["archive"], out=str(out))
    assert result == {"archive": done["archive"], "path": str(out)}
    assert gnu_tar_names(out) == ["backup_metadata.json", "user_data.db"]
    with pytest.raises(ControlError, match=r"exported\.tar\.gz"):
        d.request("export", archive=done["archive"], out=str(out))
    with pytest.raises(ControlError, match="absolute path"):
        d.request("export", archive=done["archive"], out="relative.tar.gz")
    via_ctl = d.cli("ctl", "export", done["archive"], "--out", str(out.with_name("ctl.tar.gz")))
    assert via_ctl.returncode == 0, via_ctl.stderr
    assert gnu_tar_names(out.with_name("ctl.tar.gz"))[0] == "backup_metadata.json"
    names = sorted(p.name for p in out.parent.glob("*.tar.gz*"))
    assert names == ["ctl.tar.gz", "exported.tar.gz"]
    assert not d.log.find("last_success_lost")
    assert d.healthz()[0] == 200
    holder.close()
