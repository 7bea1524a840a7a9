"""Every alarm the running daemon raises tells the truth, and clears when its cause goes.

A real daemon process, real SIGHUPs, real `/metrics` and `/healthz` over HTTP (issue 13).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backup_sidecar.control import ControlError
from daemon.conftest import Daemon, holding_database_lock, sample, wait_until

RUNS = "backup_sidecar_backup_runs_total"
RESTORES = "backup_sidecar_restore_runs_total"
REQUESTS = "backup_sidecar_control_requests_total"


def test_busy_refusals_are_counted_as_busy_not_as_failures(
    daemon: Callable[..., Daemon], daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> None:
    """A backup and a restore refused because another operation holds the database count as
    `result="busy"` in backup_runs_total, restore_runs_total and control_requests_total, not as
    `error` (which fires BackupSidecarBackupsFailing), and /healthz stays 200."""
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"daily": {"keep": 3}, "pre_restore": {"keep": 10}},
    )
    d = daemon(cfg)
    archive = d.request("backup", policy="daily")["archive"]
    with holding_database_lock(d.backup_dir, "user"):
        for op, fields in (
            ("backup", {"policy": "daily"}),
            ("restore", {"archive": archive, "confirm": True}),
        ):
            with pytest.raises(ControlError) as refused:
                d.request(op, **fields)
            assert refused.value.code == "busy", refused.value
    text = d.scrape()
    assert sample(text, RUNS, policy="daily", result="busy") == 1
    assert sample(text, RUNS, policy="daily", result="error") == 0
    assert sample(text, RUNS, policy="daily", result="ok") == 1
    assert sample(text, RESTORES, result="busy") == 1
    assert sample(text, RESTORES, result="error") == 0
    for op in ("backup", "restore"):
        assert sample(text, REQUESTS, op=op, result="busy") == 1
        assert sample(text, REQUESTS, op=op, result="error") == 0
    # A refusal takes no time worth a histogram sample: only the real backup was timed.
    assert sample(text, "backup_sidecar_backup_duration_seconds_count", policy="daily") == 1
    wait_until(lambda: d.healthz()[0] == 200, what="/healthz 200")


def test_pre_restore_archives_are_pruned_after_every_restore(
    daemon: Callable[..., Daemon], daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> None:
    """`pre_restore` is never scheduled, so only a restore can keep its retention: after every
    restore (through the socket and through the CLI beside the daemon) at most `keep` safety
    backups remain, the one just written among them, and the prune is counted."""
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"manual": {"keep": 3}, "pre_restore": {"keep": 2}},
    )
    d = daemon(cfg)
    archive = d.request("backup", policy="manual")["archive"]
    written = []
    for _ in range(3):
        answer = d.request("restore", archive=archive, confirm=True)
        written.append(answer["pre_restore_archive"])
        kept = [p.name.removesuffix(".tar.gz") for p in d.archives("pre_restore")]
        assert len(kept) <= 2, kept
        assert written[-1] in kept, (written[-1], kept)
    done = d.cli("restore", archive, "--force", "--json")
    assert done.returncode == 0, done.stderr
    by_cli = json.loads(done.stdout)["pre_restore_archive"]
    kept = [p.name.removesuffix(".tar.gz") for p in d.archives("pre_restore")]
    assert sorted(kept) == sorted([written[-1], by_cli]), kept
    deleted = sample(d.scrape(), "backup_sidecar_prune_deleted_total", policy="pre_restore")
    assert deleted == 1  # the daemon's own prunes: 3 written, 2 kept (the CLI's is not counted)
