"""The running daemon's `/metrics` and `/healthz` over real HTTP, against real databases."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backup_sidecar import archiver
from support.cli import run_cli, sitecustomize
from support.daemon import Daemon, DaemonRunner, write_config
from support.databases import Writer, make_db
from support.metrics import sample
from support.waiting import wait_until

RUNS = "backup_sidecar_backup_runs_total"
LAST_SUCCESS = "backup_sidecar_backup_last_success_timestamp_seconds"


def healthz_becomes(d: Daemon, status: int, *, timeout: float = 20.0) -> dict[str, Any]:
    """Poll /healthz until it answers `status`; return its JSON body."""

    def check() -> dict[str, Any] | None:
        code, body = d.healthz()
        return body if code == status else None

    return wait_until(check, timeout=timeout, what=f"/healthz {status}")  # type: ignore[no-any-return]


def test_scheduled_backups_under_a_live_writer(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    writer_process: Callable[..., Writer],
) -> None:
    """`every: 1s` backups of a WAL database that another process keeps writing: the run
    counters and last-success timestamps move, promtool accepts the scrape, retention keeps
    exactly 3 archives, and the writer never sees an error."""
    writer = writer_process(wal_db, rate=50)
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"fast": {"every": "1s", "keep": 3}, "pre_restore": {"keep": 10}},
        health={"max_backup_age": {"fast": "1m"}},
    )
    d = daemons.start(cfg)
    d.log.wait("backup_completed", policy="fast")
    first = d.scrape()
    first_ts = sample(first, LAST_SUCCESS, policy="fast")
    assert first_ts is not None
    assert first_ts > 0
    commits_before = writer.committed()

    d.log.wait("backup_completed", policy="fast", count=5, timeout=30)
    text = d.scrape()
    assert (sample(text, RUNS, policy="fast", result="ok") or 0) >= 2
    assert (sample(text, LAST_SUCCESS, policy="fast") or 0) > first_ts
    assert (sample(text, "backup_sidecar_backup_last_size_bytes", policy="fast") or 0) > 0
    assert (sample(text, "backup_sidecar_backup_duration_seconds_count", policy="fast") or 0) >= 2
    assert sample(text, "backup_sidecar_database_healthy", database="user") == 1
    assert (sample(text, "backup_sidecar_backup_dir_free_bytes") or 0) > 0
    assert sample(text, "backup_sidecar_build_info") == 1
    # The snapshot's lock time: exported per database and logged with each backup.
    lock = sample(text, "backup_sidecar_backup_snapshot_lock_seconds", database="user")
    assert lock is not None and 0 <= lock < 30
    logged = d.log.find("backup_completed", policy="fast")[-1]["snapshot_lock_s"]
    assert set(logged) == {"user"} and logged["user"] >= 0
    assert writer.committed() > commits_before, "the writer stalled while backups ran"

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (./scripts/bootstrap.sh --with-prometheus adds it)")
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr).decode()

    wait_until(lambda: len(d.archives("fast")) == 3, what="retention down to 3 fast archives")
    d.log.wait("archive_pruned", policy="fast")
    wait_until(
        lambda: sample(d.scrape(), "backup_sidecar_archives", policy="fast") == 3,
        what="the archives gauge to count 3",
    )
    newest = d.archives("fast")[-1].name.removesuffix(".tar.gz")
    assert d.request("verify", archive=newest)["ok"] is True
    status, body = d.healthz()
    assert (status, body) == (200, {"status": "ok"})
    report = writer.stop()
    assert report["errors"] == 0, report


def test_healthz_follows_a_corrupted_database(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    """A database damaged on disk (garbage in the middle of a b-tree page) turns /healthz 503
    with a JSON reason naming it and `database_healthy` 0; putting the good file back turns
    both back."""
    db = make_db(tmp_path / "user_data.db", wal=False, rows=2000)
    good = tmp_path / "good-copy.db"
    shutil.copyfile(db, good)
    cfg = daemon_config(databases={"user": db}, policies={"pre_restore": {"keep": 10}})
    d = daemons.start(cfg)
    healthz_becomes(d, 200)

    page_size = 4096
    page = db.stat().st_size // page_size // 2  # a page in the middle of the file
    with db.open("r+b") as f:
        f.seek((page - 1) * page_size + page_size // 2)
        f.write(b"\xff" * 64)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    assert conn.execute("PRAGMA quick_check").fetchone()[0] != "ok"  # the damage is real
    conn.close()

    body = healthz_becomes(d, 503)
    assert body["status"] == "unhealthy"
    assert any("'user'" in r and "unhealthy" in r for r in body["reasons"]), body
    assert sample(d.scrape(), "backup_sidecar_database_healthy", database="user") == 0
    d.log.wait("database_unhealthy", database="user")

    shutil.copyfile(good, db)
    assert healthz_becomes(d, 200) == {"status": "ok"}
    assert sample(d.scrape(), "backup_sidecar_database_healthy", database="user") == 1


def test_healthz_reports_an_overdue_policy(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    tmp_path: Path,
) -> None:
    """A policy whose schedule is far away and whose newest archive is older than its
    `max_backup_age` makes /healthz 503 naming the policy; a good backup of it makes it 200."""
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"rare": {"schedule": "0 0 1 1 *", "keep": 3}, "pre_restore": {"keep": 10}},
        health={"max_backup_age": {"rare": "6s"}},
    )
    # One archive of the policy made before the start: recent enough that no catch-up runs.
    made = run_cli("backup", "--policy", "rare", config=write_config(tmp_path / "cli.yaml", cfg))
    assert made.returncode == 0, made.stderr
    d = daemons.start(cfg)
    assert not d.log.find("catch_up_due", policy="rare")

    body = healthz_becomes(d, 503)
    assert any("'rare'" in r for r in body["reasons"]), body
    age = sample(d.scrape(), "backup_sidecar_policy_last_success_age_seconds", policy="rare")
    assert age is not None
    assert age > 6

    d.request("backup", policy="rare")
    assert healthz_becomes(d, 200, timeout=6) == {"status": "ok"}


def test_healthz_reports_a_failed_restore_drill(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    """A `drill` policy whose newest archive has a damaged database member (its metadata still
    readable, so it is listed as verified) fails the drill: /healthz 503 naming the drill and
    the drill error counter moves. After a good backup the next drill passes and it is 200."""
    db = make_db(tmp_path / "user_data.db", wal=True, rows=5000)
    cfg = daemon_config(
        databases={"user": db},
        policies={"drill": {"every": "1s", "keep": 0}, "pre_restore": {"keep": 10}},
    )
    made = run_cli("backup", "--json", config=write_config(tmp_path / "cli.yaml", cfg))
    assert made.returncode == 0, made.stderr
    (archive,) = Path(cfg["backup_dir"]).glob("*.tar.gz")
    data = bytearray(archive.read_bytes())
    at = len(data) * 3 // 4  # well past the metadata member, inside the database member
    data[at : at + 32] = bytes(b ^ 0x5A for b in data[at : at + 32])
    archive.write_bytes(bytes(data))
    (listed,) = archiver.list_archives(Path(cfg["backup_dir"]))
    assert listed.status is archiver.ArchiveStatus.VERIFIED  # metadata still reads fine

    d = daemons.start(cfg)
    body = healthz_becomes(d, 503)
    assert any("drill" in r for r in body["reasons"]), body
    assert (sample(d.scrape(), "backup_sidecar_restore_drill_runs_total", result="error") or 0) > 0

    d.request("backup")
    assert healthz_becomes(d, 200) == {"status": "ok"}
    assert (sample(d.scrape(), "backup_sidecar_restore_drill_runs_total", result="ok") or 0) > 0
    d.log.wait("restore_drill_completed")


def test_a_drill_before_the_first_backup_is_not_a_failure(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> None:
    """On a fresh backup directory the drill's start-up catch-up can run before the first
    backup: with nothing to drill yet it is skipped, not failed, so /healthz does not stay 503
    until the next drill (an hour here) while a good archive already exists."""
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={
            "drill": {"every": "1h", "keep": 0},  # first: its catch-up runs before hourly's
            "hourly": {"every": "1h", "keep": 3},
            "pre_restore": {"keep": 10},
        },
    )
    d = daemons.start(cfg)
    d.log.wait("backup_completed", policy="hourly")
    assert healthz_becomes(d, 200) == {"status": "ok"}
    assert not d.log.find("restore_drill_failed")
    assert sample(d.scrape(), "backup_sidecar_restore_drill_runs_total", result="error") == 0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS line")


def test_idle_footprint_and_scrape_latency(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    record_property: Callable[[str, object], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Figures for the report, not a benchmark: the idle daemon's RSS and CPU time over a 10 s
    window, and the median latency of 20 scrapes. Only a generous sanity bound is asserted
    (idle CPU under 2 s in 10 s)."""
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"daily": {"schedule": "0 3 * * *", "keep": 7}, "pre_restore": {"keep": 10}},
        health={"interval": "60s", "max_backup_age": {"daily": "26h"}},
    )
    d = daemons.start(cfg)
    d.log.wait("backup_completed", policy="daily")  # the start-up catch-up, then idle

    pid = d.proc.pid
    cpu_before, t_before = _cpu_seconds(pid), time.monotonic()
    time.sleep(10.0)  # the measurement window itself, not a wait for anything
    cpu_idle, window = _cpu_seconds(pid) - cpu_before, time.monotonic() - t_before
    rss = _rss_kib(pid)

    latencies = []
    for _ in range(20):
        started = time.perf_counter()
        d.scrape()
        latencies.append(time.perf_counter() - started)
    median_ms = statistics.median(latencies) * 1000

    figures = {
        "idle_rss_mib": round(rss / 1024, 1),
        "idle_cpu_s": round(cpu_idle, 3),
        "idle_window_s": round(window, 2),
        "scrape_median_ms": round(median_ms, 2),
        "scrape_max_ms": round(max(latencies) * 1000, 2),
    }
    for key, value in figures.items():
        record_property(key, value)
    with capsys.disabled():
        print(f"\ndaemon footprint: {figures}")
    assert cpu_idle < 2.0, figures


def _damage_keeping_mtime(db: Path) -> None:
    """Garbage in the middle of a b-tree page, with the file's size and mtime put back (as bit
    rot on the disk would leave them)."""
    before = db.stat()
    page_size = 4096
    page = before.st_size // page_size // 2
    with db.open("r+b") as f:
        f.seek((page - 1) * page_size + page_size // 2)
        f.write(b"\xff" * 64)
    os.utime(db, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert db.stat().st_mtime_ns == before.st_mtime_ns


def test_an_unchanged_database_is_rechecked_only_after_recheck_unchanged(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    """An idle database (same size and mtime of the file and its -wal) is not checked again
    every interval: damage that leaves both alone stays unseen for `recheck_unchanged` (here
    1h, over several 1s intervals), and is found at once when it is 0 (every interval)."""
    db = make_db(tmp_path / "user_data.db", wal=False, rows=2000)
    base = {"databases": {"user": db}, "policies": {"pre_restore": {"keep": 10}}}
    lazy = daemons.start(daemon_config(**base, health={"recheck_unchanged": "1h"}))
    healthz_becomes(lazy, 200)
    _damage_keeping_mtime(db)
    deadline = time.monotonic() + 4.0  # four health intervals
    while time.monotonic() < deadline:
        assert lazy.healthz()[0] == 200, "an unchanged file was checked again"
    lazy.stop()

    eager = daemons.start(daemon_config(**base, health={"recheck_unchanged": "0s"}))
    body = healthz_becomes(eager, 503)
    assert any("'user'" in r for r in body["reasons"]), body


def test_odd_file_names_back_up_through_the_daemon_and_count(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    """A daemon protecting `my data.db` and `日本.db` backs them up on request into a verified
    archive and counts the run as ok (before, the run failed after publishing a damaged archive
    and counted neither ok nor error); a reload that adds a database two of them would archive
    under one name is refused naming both keys, and the running config goes on."""
    live = tmp_path / "live"
    live.mkdir()
    dbs = {"a": make_db(live / "my data.db", wal=True), "b": make_db(live / "日本.db", wal=False)}
    cfg = daemon_config(databases=dbs, policies={"pre_restore": {"keep": 10}})
    d = daemons.start(cfg)
    made = d.request("backup", policy="manual")
    assert made["databases"] == ["a", "b"], made
    listed = d.request("list")["archives"]
    assert [(a["status"], a["databases"]) for a in listed] == [("verified", ["a", "b"])]
    text = d.scrape()
    assert sample(text, RUNS, policy="manual", result="ok") == 1
    assert (sample(text, RUNS, policy="manual", result="error") or 0) == 0
    assert d.request("verify", archive=listed[0]["name"])["ok"] is True

    mark = d.log.mark()
    other = tmp_path / "other"
    other.mkdir()
    clash = {**cfg["databases"], "c": {"path": str(make_db(other / "my data.db", wal=True))}}
    d.rewrite_config({**cfg, "databases": clash})
    d.signal(signal.SIGHUP)
    refused = d.log.wait("config_reload_refused", since=mark)
    assert "databases.a and databases.c" in refused["error"]
    assert set(d.request("status")["databases"]) == {"a", "b"}


def test_archive_counts_follow_socket_backups_and_prunes_at_once(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    tmp_path: Path,
) -> None:
    """`backup_sidecar_archives` holds the backup directory's counts from the start, and moves
    right after a socket backup and a socket prune (it read the old count until the next
    health check, here an hour away)."""
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"manual": {"keep": 5}, "pre_restore": {"keep": 10}},
        health={"interval": "1h"},
    )
    cli_cfg = write_config(tmp_path / "cli.yaml", cfg)
    for name in ("manual_20260101_000000", "manual_20260101_000001"):
        made = run_cli("backup", "--name", name, config=cli_cfg)
        assert made.returncode == 0, made.stderr
    d = daemons.start(cfg)

    def archives() -> float | None:
        return sample(d.scrape(), "backup_sidecar_archives", policy="manual")

    assert wait_until(lambda: archives() == 2, what="2 archives counted at start")
    made = d.request("backup")["archive"]
    assert archives() == 3, f"after the socket backup {made}"
    pruned = d.request("prune", policy="manual", keep=1)
    assert len(pruned["deleted"]) == 2, pruned
    assert archives() == 1


#: Loaded by the daemon under test (PYTHONPATH): every backup fails with an exception that is
#: not one of the sidecar's own, as a bug in the archiver would.
_FAILING_ARCHIVER = """\
import backup_sidecar.archiver as archiver
def _create_backup(*args, **kwargs):
    raise RuntimeError("injected archiver bug")
archiver.create_backup = _create_backup
"""


def test_a_scheduled_backup_failing_with_a_bug_is_counted_and_turns_healthz_503(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    tmp_path: Path,
) -> None:
    """A scheduled backup that fails with an exception the archiver does not name (injected
    into the daemon process) counts as `result="error"`, turns /healthz 503 naming the policy
    and the exception, and is still logged as a crash with its traceback (it is a bug). Before,
    it counted neither ok nor error and /healthz stayed 200."""
    cfg = daemon_config(
        databases={"user": wal_db}, policies={"fast": {"every": "1h", "keep": 2}},
    )  # fmt: skip
    d = daemons.start(cfg, env=sitecustomize(tmp_path, _FAILING_ARCHIVER), crash_expected=True)
    failed = d.log.wait("backup_failed", policy="fast")  # the catch-up run at start
    assert failed["error"] == "RuntimeError: injected archiver bug"
    d.log.wait("scheduled_run_failed", policy="fast")
    assert sample(d.scrape(), RUNS, policy="fast", result="error") == 1
    assert (sample(d.scrape(), RUNS, policy="fast", result="ok") or 0) == 0
    body = healthz_becomes(d, 503)
    assert any(
        "policy 'fast': the last backup failed: RuntimeError: injected archiver bug" in r
        for r in body["reasons"]
    ), body
