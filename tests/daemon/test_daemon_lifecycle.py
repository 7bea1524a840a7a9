"""The daemon's lifecycle as an operator sees it: start, signals, reload, one per directory."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from backup_sidecar.control import (
    ControlClient,
    ControlError,
    DaemonConnectionError,
    DaemonNotRunningError,
)
from support.daemon import Daemon, DaemonRunner
from support.databases import holding_database_lock, row_count
from support.metrics import sample
from support.waiting import wait_until


def answers(path: Path) -> bool:
    """Whether the daemon answers a ping on the control socket now (a connection the stopping
    daemon accepted into its backlog and then reset is no answer)."""
    try:
        ControlClient(path, timeout_s=5).request({"op": "ping"})
    except (DaemonNotRunningError, DaemonConnectionError):
        return False
    return True


def assert_every_archive_verifies(d: Daemon) -> None:
    """Every archive in the backup directory passes a full CLI `verify`; nothing else is there."""
    for path in sorted(d.backup_dir.iterdir()):
        if path.name in (".locks", ".staging", ".rescue"):  # .rescue: checked by the tests
            continue
        assert path.name.endswith(".tar.gz"), f"unexpected file {path.name} in the backup dir"
        done = d.cli("verify", path.name.removesuffix(".tar.gz"))
        assert done.returncode == 0, f"{path.name}: {done.stderr}"


@pytest.mark.slow
def test_sigterm_during_a_long_backup_aborts_it_within_the_grace_period(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], big_db: Path
) -> None:
    """SIGTERM while the start-up backup of a ~200 MB database runs, with `grace_period: 0s`
    (so the abort path runs however fast the machine is): the daemon aborts the backup, exits 0
    within a few seconds, removes its socket, and leaves no partial archive; the next start
    finds nothing left under `.staging/`."""
    cfg = daemon_config(
        databases={"user": big_db},
        policies={"hourly": {"every": "1h", "keep": 3}, "pre_restore": {"keep": 10}},
        health={"interval": "60s"},
        grace_period="0s",
    )
    d = daemons.start(cfg)
    d.log.wait("catch_up_due", policy="hourly")
    staging = d.backup_dir / ".staging"
    wait_until(lambda: any(staging.glob("backup-*")), what="the backup to start staging")
    assert not d.log.find("backup_completed")

    d.signal(signal.SIGTERM)
    sent = time.monotonic()
    assert d.wait_exit(timeout=30) == 0
    elapsed = time.monotonic() - sent
    assert elapsed < 4.0, f"exit took {elapsed:.1f}s with a 0s grace period"
    assert not d.log.find("backup_completed"), "the backup was expected to be cut short"
    (failed,) = d.log.find("backup_failed", policy="hourly")
    assert "aborted" in failed["error"]
    assert d.log.find("grace_period_expired")
    assert not d.socket.exists()
    assert_every_archive_verifies(d)

    calm = dict(cfg, policies={"hourly": {"keep": 3}, "pre_restore": {"keep": 10}})
    again = daemons.start(calm)
    assert not staging.exists() or not list(staging.iterdir())
    assert again.request("ping")["pong"] is True


@pytest.mark.slow
def test_sigterm_during_a_long_restore_leaves_the_live_database_whole(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], big_db: Path
) -> None:
    """SIGTERM while a socket restore of a ~200 MB database runs (its pre-restore safety archive
    being written, after the commit), with `grace_period: 1s`: the daemon exits 0 within grace +
    margin and the client gets an answer rather than a hang. Either the restore finished inside
    the grace period (ok answer, the archive's content live, its safety backup complete), or it
    was aborted before writing (error answer, the old content live), or the shutdown
    interrupted its safety archive ("restore incomplete" naming the .rescue directory, which
    holds exactly the old content); the live database is intact and never a mix, and every
    archive left in the backup directory verifies."""
    cfg = daemon_config(
        databases={"user": big_db},
        policies={"manual": {"keep": 5}, "pre_restore": {"keep": 10}},
        health={"interval": "60s"},
        grace_period="1s",
    )
    d = daemons.start(cfg)
    archive = d.request("backup")["archive"]
    total = row_count(big_db)
    conn = sqlite3.connect(big_db)
    with conn:
        conn.execute("DELETE FROM items WHERE id <= 100")
    conn.close()

    staging = d.backup_dir / ".staging"
    with ThreadPoolExecutor(1) as pool:
        restore = pool.submit(d.request, "restore", archive=archive, confirm=True)
        # Past verifying the archive: the pre-restore safety backup of the live database runs.
        wait_until(lambda: any(staging.glob("backup-*")), what="the safety backup to start")
        d.signal(signal.SIGTERM)
        sent = time.monotonic()
        assert d.wait_exit(timeout=30) == 0
        elapsed = time.monotonic() - sent
        try:
            answer: dict[str, Any] | ControlError = restore.result(timeout=30)
        except ControlError as exc:
            answer = exc
    assert elapsed < 1.0 + 4.0, f"exit took {elapsed:.1f}s with a 1s grace period"
    check = sqlite3.connect(f"file:{big_db}?mode=ro", uri=True)
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    check.close()
    rescue = d.backup_dir / ".rescue"
    kept = sorted(rescue.iterdir()) if rescue.is_dir() else []
    if isinstance(answer, ControlError) and "restore incomplete" in answer.message:
        # Committed, then the shutdown interrupted the safety archive: the replaced content is
        # kept, named in the answer.
        assert row_count(big_db) == total
        (saved,) = kept
        assert str(saved) in answer.message and (saved / ".saved").exists()
        assert row_count(saved / "user_data.db") == total - 100
    elif isinstance(answer, ControlError):
        assert answer.code in ("failed", "refused")
        assert row_count(big_db) == total - 100, "an aborted restore must leave the old content"
        assert kept == []
    else:
        assert answer["restored"] == ["user"]
        assert row_count(big_db) == total
        assert (d.backup_dir / f"{answer['pre_restore_archive']}.tar.gz").is_file()
        assert kept == []
    assert not list(staging.glob("backup-*")), "a partial safety backup was left staged"
    assert_every_archive_verifies(d)


@pytest.mark.slow
def test_a_second_sigterm_exits_at_once_and_the_next_start_cleans_up(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], big_db: Path
) -> None:
    """A second SIGTERM during the grace period exits at once (code 1) in the middle of a big
    backup, like a crash: no archive appears, and the next start removes the dead backup's
    staging directory (`leftover_removed`)."""
    cfg = daemon_config(
        databases={"user": big_db},
        policies={"hourly": {"every": "1h", "keep": 3}, "pre_restore": {"keep": 10}},
        health={"interval": "60s"},
        grace_period="60s",
    )
    d = daemons.start(cfg)
    staging = d.backup_dir / ".staging"
    wait_until(lambda: any(staging.glob("backup-*")), what="the backup to start staging")
    mark = d.log.mark()
    d.signal(signal.SIGTERM)
    d.log.wait("daemon_stopping", since=mark)
    d.signal(signal.SIGTERM)
    sent = time.monotonic()
    assert d.wait_exit(timeout=30) == 1
    assert time.monotonic() - sent < 5.0
    assert not d.log.find("backup_completed")
    left = {p.name for p in staging.glob("backup-*")}
    assert left, "a killed backup leaves its staging directory"
    assert_every_archive_verifies(d)

    calm = dict(cfg, policies={"hourly": {"keep": 3}, "pre_restore": {"keep": 10}})
    again = daemons.start(calm)
    removed = {Path(e["path"]).name for e in again.log.find("leftover_removed")}
    assert left <= removed
    assert not list(staging.glob("backup-*"))


def test_sigterm_lets_a_short_job_finish(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> None:
    """SIGTERM while a socket backup is in flight (waiting for the database lock, then quick):
    the daemon stops accepting, lets the job finish within the grace period, answers the client,
    exits 0 and leaves a complete archive and no socket file."""
    cfg = daemon_config(
        databases={"user": wal_db}, policies={"manual": {"keep": 5}, "pre_restore": {"keep": 10}}
    )
    d = daemons.start(cfg)
    result: dict[str, Any] = {}

    def backup() -> None:
        result.update(d.request("backup", databases=["user"], wait=True))

    with holding_database_lock(d.backup_dir, "user"):
        mark = d.log.mark()
        worker = threading.Thread(target=backup)
        worker.start()
        d.log.wait("control_request", op="backup", since=mark)
        d.signal(signal.SIGTERM)
        d.log.wait("daemon_stopping", since=mark)
        wait_until(lambda: not answers(d.socket), what="the daemon to stop accepting")
        assert worker.is_alive()
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert d.wait_exit(timeout=30) == 0
    archive = d.backup_dir / f"{result['archive']}.tar.gz"
    assert archive.is_file()
    assert_every_archive_verifies(d)
    assert not d.socket.exists()


def test_sigterm_stops_a_request_still_waiting_for_a_database_lock(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> None:
    """A `"wait": true` backup still queued behind a lock that another process never lets go
    does not keep the daemon alive: after SIGTERM and `grace_period: 1s` the client gets an
    error answer, the daemon exits 0, and no archive appears."""
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"manual": {"keep": 5}, "pre_restore": {"keep": 10}},
        grace_period="1s",
    )
    d = daemons.start(cfg)
    with ThreadPoolExecutor(1) as pool, holding_database_lock(d.backup_dir, "user"):
        mark = d.log.mark()
        queued = pool.submit(d.request, "backup", databases=["user"], wait=True)
        d.log.wait("control_request", op="backup", since=mark)
        d.signal(signal.SIGTERM)
        sent = time.monotonic()
        assert d.wait_exit(timeout=30) == 0
        elapsed = time.monotonic() - sent
        with pytest.raises(ControlError):
            queued.result(timeout=10)
    assert elapsed < 1.0 + 4.0, f"exit took {elapsed:.1f}s with a 1s grace period"
    assert not d.archives()
    assert not d.socket.exists()


def test_sighup_reloads_a_valid_file_and_refuses_an_invalid_one(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> None:
    """SIGHUP with a valid new file adds its new policy (seen in `ctl status` next_runs and in
    the metrics); SIGHUP with an invalid file logs `config_reload_refused` naming the problem,
    and the old policies keep running (another archive of them appears afterwards)."""
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"fast": {"every": "1s", "keep": 3}, "pre_restore": {"keep": 10}},
    )
    d = daemons.start(cfg)
    assert set(d.request("status")["next_runs"]) == {"fast"}

    mark = d.log.mark()
    extra = {**cfg["policies"], "extra": {"every": "1h", "keep": 2}}
    d.rewrite_config({**cfg, "policies": extra})
    d.signal(signal.SIGHUP)
    d.log.wait("config_reloaded", since=mark)
    assert set(d.request("status")["next_runs"]) == {"fast", "extra"}
    shown = d.ctl("status", "--json")
    assert shown.returncode == 0, shown.stderr
    assert '"extra"' in shown.stdout
    d.log.wait("backup_completed", policy="extra", since=mark)  # a new policy catches up
    next_run = "backup_sidecar_scheduler_next_run_timestamp_seconds"
    wait_until(lambda: sample(d.scrape(), next_run, policy="extra"), what="extra's next run")
    assert sample(d.scrape(), "backup_sidecar_backup_runs_total", policy="extra", result="ok")

    mark = d.log.mark()
    broken = {**cfg, "policies": {**extra, "fast": {"every": "1s", "keep": -1}}}
    d.rewrite_config(broken)
    d.signal(signal.SIGHUP)
    refused = d.log.wait("config_reload_refused", since=mark)
    assert str(d.config_path) in refused["error"]
    assert "policies.fast.keep" in refused["error"]
    d.log.wait("backup_completed", policy="fast", since=d.log.mark())
    assert set(d.request("status")["next_runs"]) == {"fast", "extra"}
    assert d.proc.poll() is None


def test_sighup_cannot_move_the_daemon_to_another_backup_dir(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    tmp_path: Path,
) -> None:
    """The directory lock (one daemon per backup directory) is taken at start, so a reload
    that names another `backup_dir` is refused, naming the key: the daemon keeps its directory,
    and another daemon can still not start on it."""
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"fast": {"every": "1s", "keep": 3}, "pre_restore": {"keep": 10}},
    )
    d = daemons.start(cfg)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    mark = d.log.mark()
    d.rewrite_config({**cfg, "backup_dir": str(elsewhere)})
    d.signal(signal.SIGHUP)
    refused = d.log.wait("config_reload_refused", since=mark)
    assert "backup_dir" in refused["error"]
    assert d.request("status")["backup_dir"] == str(d.backup_dir)
    d.log.wait("backup_completed", policy="fast", since=d.log.mark())
    assert not list(elsewhere.glob("*.tar.gz"))
    second = daemons.start(cfg, started_ok=False)
    assert second.wait_exit(timeout=30) == 1

    mark = d.log.mark()
    moved = {**cfg, "control": {**cfg["control"], "socket": str(tmp_path / "other.sock")}}
    d.rewrite_config(moved)
    d.signal(signal.SIGHUP)
    assert "control" in d.log.wait("config_reload_refused", since=mark)["error"]
    assert d.request("ping")["pong"] is True


def test_a_second_daemon_on_the_same_backup_dir_is_refused(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> None:
    """A second daemon with the same configuration exits 1 with one clear line naming the
    backup directory, and leaves the first daemon's socket and service alone."""
    cfg = daemon_config(databases={"user": wal_db}, policies={"pre_restore": {"keep": 10}})
    first = daemons.start(cfg)
    second = daemons.start(cfg, started_ok=False)
    assert second.wait_exit(timeout=30) == 1
    errors = [line for line in second.log.raw if not line.startswith("{")]
    assert len(errors) == 1, second.log.raw
    assert str(first.backup_dir) in errors[0]
    assert "already running" in errors[0]
    assert not second.log.find("daemon_started")
    assert first.socket.exists()
    assert first.request("ping")["pid"] == first.proc.pid
    assert first.healthz()[0] == 200


def test_leftover_staging_dirs_are_removed_at_start(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    backup_dir: Path,
) -> None:
    """Staging directories left by a crash (no live lock holder) are removed at start with a
    `leftover_removed` event; one whose lock is still held by a live process is kept."""
    staging = backup_dir / ".staging"
    crashed = staging / "backup-crashed"
    crashed.mkdir(parents=True)
    (crashed / ".lock").touch()
    (crashed / "user_data.db").write_bytes(b"half a snapshot")
    ancient = staging / "restore-ancient"  # died before it created its lock file
    ancient.mkdir()
    old = time.time() - 3600
    os.utime(ancient, (old, old))
    live = staging / "verify-live"
    live.mkdir()
    fd = os.open(live / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        cfg = daemon_config(databases={"user": wal_db}, policies={"pre_restore": {"keep": 10}})
        d = daemons.start(cfg)
        removed = {Path(e["path"]).name for e in d.log.find("leftover_removed")}
        assert removed == {"backup-crashed", "restore-ancient"}
        assert not crashed.exists()
        assert not ancient.exists()
        assert live.is_dir()
    finally:
        os.close(fd)


def test_control_socket_file_is_replaced_only_when_stale(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    tmp_path: Path,
) -> None:
    """A daemon killed with SIGKILL leaves its socket file behind; the next start replaces it
    and answers on it; a clean stop removes it."""
    cfg = daemon_config(databases={"user": wal_db}, policies={"pre_restore": {"keep": 10}})
    first = daemons.start(cfg)
    first.proc.kill()
    assert first.wait_exit(timeout=30) == -signal.SIGKILL
    assert first.socket.exists()
    second = daemons.start(cfg)
    assert ControlClient(second.socket, timeout_s=10).request({"op": "ping"})["pid"] == (
        second.proc.pid
    )
    assert second.stop() == 0
    assert not second.socket.exists()
    done = first.cli("list", "--json")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("how", ["locks_dir_removed", "lock_file_replaced"])
def test_a_lost_daemon_lock_is_retaken_within_one_health_interval(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    how: str,
) -> None:
    """Outside attack 1, finding 4: with a daemon running, `rm -rf <backup_dir>/.locks` (or
    replacing `daemon.lock` with a new empty file) let a second daemon start on the same
    directory; the first never retook its lock. Now the first notices within one health
    interval (its descriptor no longer the file at that path), takes the new file, and a
    second daemon exits 1 naming the first one's pid."""
    cfg = daemon_config(databases={"user": wal_db}, policies={"pre_restore": {"keep": 10}})
    first = daemons.start(cfg)
    lock = first.backup_dir / ".locks" / "daemon.lock"
    mark = first.log.mark()
    if how == "locks_dir_removed":
        shutil.rmtree(lock.parent)
    else:
        lock.unlink()
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)

    def retaken() -> bool:
        try:
            return lock.read_text() == f"{first.proc.pid}\n"
        except FileNotFoundError:
            return False

    wait_until(retaken, what="the first daemon's pid in a new daemon.lock")
    first.log.wait("daemon_lock_lost", since=mark)
    second = daemons.start({**cfg, "control": {"socket": str(first.socket) + "2", "mode": "0600"}},
                    started_ok=False)  # fmt: skip
    assert second.wait_exit(timeout=30) == 1
    errors = [line for line in second.log.raw if not line.startswith("{")]
    assert f"(pid {first.proc.pid}) is already running" in errors[0], errors
    assert first.healthz()[0] == 200


def test_a_daemon_whose_lock_another_took_stops_writing_and_says_so(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
) -> None:
    """Outside attack 1, finding 4: when another process holds the new `daemon.lock` (it
    replaced the file while this daemon ran), the daemon logs `backup_dir_claim_lost`,
    /healthz answers 503 naming the holder's pid, and scheduled runs are refused (nothing
    written) until the holder lets go; then the lock is retaken, /healthz clears and backups
    resume."""
    cfg = daemon_config(databases={"user": wal_db}, policies={"fast": {"every": "1s", "keep": 3}})
    d = daemons.start(cfg)
    d.log.wait("backup_completed", policy="fast")
    lock = d.backup_dir / ".locks" / "daemon.lock"
    tmp = lock.with_name("planted.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()}\n".encode())
        mark = d.log.mark()
        tmp.rename(lock)  # atomically: the daemon never sees the path without a held file

        def named() -> list[str] | None:
            code, body = d.healthz()
            found = [r for r in body.get("reasons", []) if f"(pid {os.getpid()})" in r]
            return found if code == 503 and found else None

        wait_until(named, what="/healthz naming the other lock holder")
        d.log.wait("backup_dir_claim_lost", since=mark)
        refused = d.log.mark()
        d.log.wait("scheduled_run_refused", policy="fast", since=refused)
        before = set(d.archives("fast"))
        d.log.wait("scheduled_run_refused", policy="fast", since=refused, count=2)
        assert set(d.archives("fast")) == before
        assert not d.log.find("backup_completed", since=refused)
    finally:
        os.close(fd)
    mark = d.log.mark()
    d.log.wait("daemon_lock_retaken", since=mark)
    wait_until(lambda: d.healthz()[0] == 200, what="/healthz 200 once the lock is back")
    d.log.wait("backup_completed", policy="fast", since=mark)
    assert lock.read_text() == f"{d.proc.pid}\n"
