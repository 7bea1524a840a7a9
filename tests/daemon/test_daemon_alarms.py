"""Every alarm the running daemon raises tells the truth, and clears when its cause goes.

A real daemon process, real SIGHUPs, real `/metrics` and `/healthz` over HTTP (issue 13).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from backup_sidecar.control import ControlError
from support.daemon import DaemonRunner
from support.databases import SqlSession, holding_database_lock, make_db
from support.metrics import sample
from support.waiting import wait_until

RUNS = "backup_sidecar_backup_runs_total"
RESTORES = "backup_sidecar_restore_runs_total"
REQUESTS = "backup_sidecar_control_requests_total"
LAST_SUCCESS = "backup_sidecar_backup_last_success_timestamp_seconds"


def test_busy_refusals_are_counted_as_busy_not_as_failures(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> None:
    """A backup and a restore refused because another operation holds the database count as
    `result="busy"` in backup_runs_total, restore_runs_total and control_requests_total, not as
    `error` (which fires BackupSidecarBackupsFailing), and /healthz stays 200."""
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"daily": {"keep": 3}, "pre_restore": {"keep": 10}},
    )
    d = daemons.start(cfg)
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
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> None:
    """`pre_restore` is never scheduled, so only a restore can keep its retention: after every
    restore (through the socket and through the CLI beside the daemon) at most `keep` safety
    backups remain, the one just written among them, and the prune is counted."""
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"manual": {"keep": 3}, "pre_restore": {"keep": 2}},
    )
    d = daemons.start(cfg)
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


def _series_of(text: str, **labels: str) -> list[str]:
    """Every sample line of a scrape carrying all of `labels`."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return [
        line
        for line in text.splitlines()
        if not line.startswith("#") and all(w in line for w in wanted)
    ]


def test_sighup_removing_a_failing_policy_and_database_clears_their_alarms(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    tmp_path: Path,
) -> None:
    """A database that is not SQLite and a policy whose backups of it fail make /healthz 503
    and `database_healthy{database="extra"}` 0. A SIGHUP that removes both turns /healthz 200
    and leaves no series of either in /metrics (the critical alert stops), at once rather than
    at a restart."""
    extra = tmp_path / "extra.db"
    extra.write_bytes(b"this is not an SQLite database\n" * 200)
    cfg = daemon_config(
        databases={"user": wal_db, "extra": extra},
        policies={
            "good": {"every": "1h", "keep": 2, "databases": ["user"]},
            "broken": {"every": "1h", "keep": 2, "databases": ["extra"]},
            "pre_restore": {"keep": 10},
        },
        health={"max_backup_age": {"good": "1h", "broken": "1h"}},
    )
    d = daemons.start(cfg)
    d.log.wait("backup_failed", policy="broken")
    d.log.wait("backup_completed", policy="good")

    def unhealthy() -> dict[str, Any] | None:
        code, body = d.healthz()
        reasons = " ".join(body.get("reasons", ()))
        return body if code == 503 and "'extra'" in reasons and "'broken'" in reasons else None

    wait_until(unhealthy, what="/healthz 503 for extra and broken")
    text = d.scrape()
    assert sample(text, "backup_sidecar_database_healthy", database="extra") == 0
    assert sample(text, RUNS, policy="broken", result="error") == 1

    mark = d.log.mark()
    kept = {k: v for k, v in cfg["policies"].items() if k != "broken"}
    d.rewrite_config(
        {
            **cfg,
            "databases": {"user": cfg["databases"]["user"]},
            "policies": kept,
            "health": {**cfg["health"], "max_backup_age": {"good": "1h"}},
        }
    )
    d.signal(signal.SIGHUP)
    d.log.wait("config_reloaded", since=mark)
    assert d.healthz() == (200, {"status": "ok"})
    text = d.scrape()
    assert not _series_of(text, database="extra"), _series_of(text, database="extra")
    assert not _series_of(text, policy="broken"), _series_of(text, policy="broken")
    assert sample(text, "backup_sidecar_database_healthy", database="user") == 1
    assert sample(text, RUNS, policy="good", result="ok") == 1


def test_sighup_adding_a_policy_seeds_its_last_success_from_disk(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> None:
    """A policy added by SIGHUP whose archive is already on disk (made by the CLI beside the
    running daemon) reports that archive's time as its last success at once, not 0 ("never",
    which fires BackupSidecarBackupOverdue), and is not run as a catch-up."""
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"manual": {"keep": 3}, "pre_restore": {"keep": 10}},
    )
    d = daemons.start(cfg)
    later = {**cfg, "policies": {**cfg["policies"], "later": {"schedule": "0 0 1 1 *", "keep": 2}}}
    later["health"] = {**cfg["health"], "max_backup_age": {"later": "1h"}}
    d.rewrite_config(later)
    made = d.cli("backup", "--policy", "later", "--json")
    assert made.returncode == 0, made.stderr
    [listed] = [a for a in d.request("list")["archives"] if a["policy"] == "later"]
    created = listed["created_at"]

    mark = d.log.mark()
    d.signal(signal.SIGHUP)
    d.log.wait("config_reloaded", since=mark)
    text = d.scrape()
    expected = datetime.fromisoformat(created).timestamp()
    assert sample(text, LAST_SUCCESS, policy="later") == pytest.approx(expected, abs=1)
    age = sample(text, "backup_sidecar_policy_last_success_age_seconds", policy="later")
    assert age is not None and age < 3600
    assert d.healthz() == (200, {"status": "ok"})
    assert not d.log.find("catch_up_due", policy="later", since=mark)


def test_an_archive_deleted_by_hand_is_no_longer_a_last_success(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> None:
    """The only archive of a policy deleted by hand: within a health interval its last-success
    timestamp drops to 0 and its age series goes, and /healthz is 503 naming it (it had a
    restore point and lost it: no start-up grace). A new backup clears both."""
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"rare": {"schedule": "0 0 1 1 *", "keep": 3}, "pre_restore": {"keep": 10}},
        health={"max_backup_age": {"rare": "1h"}},
    )
    d = daemons.start(cfg)  # no archive yet: it catches up at once
    d.log.wait("backup_completed", policy="rare")
    wait_until(lambda: (sample(d.scrape(), LAST_SUCCESS, policy="rare") or 0) > 0, what="seed")
    assert d.healthz() == (200, {"status": "ok"})

    [archive] = d.archives("rare")
    archive.unlink()

    def lost() -> dict[str, Any] | None:
        code, body = d.healthz()
        return body if code == 503 and "'rare'" in " ".join(body["reasons"]) else None

    wait_until(lost, what="/healthz 503 for rare", timeout=10)
    text = d.scrape()
    assert sample(text, LAST_SUCCESS, policy="rare") == 0
    assert sample(text, "backup_sidecar_policy_last_success_age_seconds", policy="rare") is None
    d.log.wait("last_success_lost", policy="rare")

    d.request("backup", policy="rare")
    wait_until(lambda: d.healthz() == (200, {"status": "ok"}), what="/healthz 200", timeout=10)
    assert (sample(d.scrape(), LAST_SUCCESS, policy="rare") or 0) > 0


def test_a_database_locked_since_start_is_unknown_not_unhealthy(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    rollback_db: Path,
    sql_session: Callable[..., SqlSession],
) -> None:
    """A daemon started while the application holds an exclusive lock on its database has no
    check result: /healthz is 200 and says the database is unknown, `database_healthy` has no
    sample (the critical alert cannot fire) and nothing logs `database_unhealthy`. When the
    lock goes, the first check completes: healthy 1 and the unknown note gone."""
    app = sql_session(rollback_db)
    app.execute("BEGIN EXCLUSIVE")
    app.execute("INSERT INTO items(body) VALUES ('held')")
    cfg = daemon_config(databases={"user": rollback_db}, policies={"pre_restore": {"keep": 10}})
    d = daemons.start(cfg)
    d.log.wait("database_check_deferred", database="user")

    def reports_unknown() -> tuple[int, dict[str, Any]] | None:
        answer = d.healthz()
        return answer if "unknown" in answer[1] else None

    code, body = wait_until(reports_unknown, what="/healthz naming an unknown database")
    assert code == 200, body
    assert body["status"] == "ok"
    assert any("'user'" in u and "not checked yet" in u for u in body["unknown"]), body
    assert sample(d.scrape(), "backup_sidecar_database_healthy", database="user") is None
    d.log.wait("database_check_deferred", database="user", count=2)  # still locked, still 200
    assert d.healthz()[0] == 200
    assert "unknown" in d.request("status") and d.request("status")["unknown"]
    assert not d.log.find("database_unhealthy")

    app.execute("COMMIT")
    wait_until(
        lambda: sample(d.scrape(), "backup_sidecar_database_healthy", database="user") == 1,
        what="database_healthy 1 once the lock is gone",
    )
    wait_until(lambda: d.healthz() == (200, {"status": "ok"}), what="/healthz without unknown")


def test_runs_the_scheduler_drops_are_counted_and_reported_until_a_run_succeeds(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    tmp_path: Path,
) -> None:
    """One worker. `slow` (every 1s) waits for its database, held by another operation, so its
    next runs are dropped (`still_running`: counted only). `late` (every 5s), added by SIGHUP,
    queues its catch-up behind it; when the hold ends over a period later, that run is dropped
    (`late`): counted and a /healthz reason naming the policy (before: only free-text
    APScheduler warnings), until its next run succeeds."""
    held = make_db(tmp_path / "held.db", wal=True)
    cfg = daemon_config(
        databases={"user": wal_db, "held": held},
        policies={
            "slow": {"every": "1s", "keep": 10, "databases": ["held"]},
            "pre_restore": {"keep": 10},
        },
    )
    missed = "backup_sidecar_scheduler_missed_runs_total"

    def dropped(policy: str, reason: str) -> float:
        return sample(d.scrape(), missed, policy=policy, reason=reason) or 0

    with holding_database_lock(Path(cfg["backup_dir"]), "held"):
        d = daemons.start(cfg)
        wait_until(lambda: dropped("slow", "still_running") >= 1, what="slow's dropped runs")
        assert d.healthz() == (200, {"status": "ok"})  # its own run is still going: no reason
        late = {"every": "5s", "keep": 10, "databases": ["user"]}
        d.rewrite_config({**cfg, "policies": {**cfg["policies"], "late": late}})
        mark = d.log.mark()
        d.signal(signal.SIGHUP)
        d.log.wait("config_reloaded", since=mark)
        # Its next tick, 5 s on, finds the catch-up still queued: the hold ends just after.
        d.log.wait("scheduled_run_skipped", policy="late", reason="still_running", since=mark)
    wait_until(lambda: dropped("late", "late") >= 1, what="late's queued run dropped as late")
    code, body = d.healthz()
    assert code == 503, body
    assert [r for r in body["reasons"] if "'late'" in r and "was skipped" in r], body
    d.log.wait("scheduled_run_skipped", policy="late", reason="late", since=mark)
    d.log.wait("backup_completed", policy="late", since=mark)
    wait_until(lambda: d.healthz() == (200, {"status": "ok"}), what="/healthz 200 again")
    assert dropped("late", "late") == 1


def test_a_run_queued_before_a_reload_removed_its_policy_never_starts(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    tmp_path: Path,
) -> None:
    """One worker, held up: `blocker` waits for its database (held by another operation).
    `gone`, added by SIGHUP with no archive yet, is due at once and queues behind it; a second
    SIGHUP removes `gone` before the hold ends. Its queued run must never start: no backup
    under a policy no retention prunes any more, no series of it recreated after the reload
    dropped them. (Found by the long run: a removed policy's queued run backed up every
    database and brought back `prune_deleted_total{policy="slow"}`.)"""
    held = make_db(tmp_path / "held.db", wal=True)
    cfg = daemon_config(
        databases={"user": wal_db, "held": held},
        policies={
            "blocker": {"every": "1s", "keep": 10, "databases": ["held"]},
            "pre_restore": {"keep": 10},
        },
    )
    missed = "backup_sidecar_scheduler_missed_runs_total"
    next_run = "backup_sidecar_scheduler_next_run_timestamp_seconds"
    with holding_database_lock(Path(cfg["backup_dir"]), "held"):
        d = daemons.start(cfg)
        wait_until(
            lambda: sample(d.scrape(), missed, policy="blocker", reason="still_running"),
            what="the worker held up by blocker's run",
        )
        gone = {"every": "1h", "keep": 10, "databases": ["user"]}
        d.rewrite_config({**cfg, "policies": {**cfg["policies"], "gone": gone}})
        mark = d.log.mark()
        d.signal(signal.SIGHUP)
        d.log.wait("config_reloaded", since=mark)
        # APScheduler moves a job's next run on when it hands the due run to the executor.
        wait_until(
            lambda: (sample(d.scrape(), next_run, policy="gone") or 0) > time.time() + 1800,
            what="gone's first run queued behind blocker's",
        )
        d.rewrite_config(cfg)
        mark = d.log.mark()
        d.signal(signal.SIGHUP)
        d.log.wait("config_reloaded", since=mark)
    # The held run ends, then the queue moves on in order: gone's run, then blocker's next.
    d.log.wait("backup_completed", policy="blocker", since=mark, count=2)
    ran = [e for e in d.log.events[mark:] if e.get("policy") == "gone" and "backup" in e["event"]]
    assert ran == [], ran
    assert d.log.find("scheduled_run_dropped", policy="gone", since=mark), d.log.raw[-20:]
    assert not list(d.backup_dir.glob("gone_*")), list(d.backup_dir.glob("gone_*"))
    assert 'policy="gone"' not in d.scrape()


def test_socket_backups_prune_their_policy(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> None:
    """Outside attack 1, finding 10: 4 `ctl backup --policy hourly` left 5 archives with
    `keep: 2` (only scheduled runs pruned). Now every socket backup into a policy prunes it
    like a scheduled run: at most `keep` remain, the one just written always among them;
    `manual` backups are pruned only by an explicit `prune` (the seed's `--cleanup`)."""
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"hourly": {"every": "1h", "keep": 2}, "manual": {"keep": 2}},
    )
    d = daemons.start(cfg)
    d.log.wait("backup_completed", policy="hourly")  # the start-up catch-up run
    for _ in range(4):
        written = d.request("backup", policy="hourly", wait=True)["archive"]
        kept = [p.name.removesuffix(".tar.gz") for p in d.archives("hourly")]
        assert len(kept) <= 2, kept
        assert written in kept, (written, kept)
    manual = [d.request("backup", wait=True)["archive"] for _ in range(3)]
    assert {p.name.removesuffix(".tar.gz") for p in d.archives("manual")} == set(manual)
    d.log.wait("archive_pruned", policy="hourly")


def test_socket_backup_clears_the_policys_failed_backup_reason(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    """Outside attack 1, finding 9: after a failed scheduled backup of `hourly`, a successful
    `ctl backup --policy hourly` left /healthz naming the failure until the next scheduled run
    (an hour). Any successful backup of the policy now clears it at once."""
    db = tmp_path / "later.db"
    cfg = daemon_config(databases={"user": db}, policies={"hourly": {"every": "1h", "keep": 2}})
    d = daemons.start(cfg)
    d.log.wait("backup_failed", policy="hourly")  # the catch-up run: no database yet

    def failed_reasons() -> list[str]:
        return [
            r
            for r in d.healthz()[1].get("reasons", [])
            if r.startswith("policy 'hourly': the last backup failed")
        ]

    wait_until(failed_reasons, what="/healthz naming the failed hourly backup")
    make_db(db, wal=True, rows=50)
    d.request("backup", policy="hourly", wait=True)
    assert failed_reasons() == []
