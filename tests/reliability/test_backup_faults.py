"""Backup-side faults (issue 5, faults 1-7), through the real CLI and the real daemon.

1. kill -9 of the CLI and of the daemon at many points of a backup of a ~200 MB WAL database
   while a writer commits: no archive or one that verifies, no leftover survives the next start,
   the source passes integrity_check and keeps every committed row.
2. A full backup filesystem (snapshot and compression phases): exit 1, one line naming
   the backup directory, nothing published, nothing left staged; the daemon counts the failure
   and `/healthz` says so; the next backup after space is freed succeeds.
3. A read-only backup directory; the backup directory deleted under the daemon (it recreates it
   and claims it again); the database deleted or replaced under the daemon.
4. A source held under an exclusive lock past `lock_timeout`: a clean failure within the deadline
   plus a margin, while the daemon keeps answering its socket and `/metrics`.
5. A writer committing 200/s during the whole backup of the large database: zero errors; its
   worst and p99 transaction latencies are recorded.
6. Rows committed only to `-wal` are in an archive taken through the daemon's socket.
7. Two daemons on one backup directory; two CLI backups of the same name at once.

The clock faults (8) are in test_clock_faults.py. Figures for docs/reliability.md are printed
(`-s`) and attached to the JUnit report with `record_property`.
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from support.cli import ERROR_PREFIX, clean_env, cli_command, one_error_line, run_cli
from support.daemon import Daemon, DaemonRunner, fault_config
from support.databases import copy_of, count, integrity, make_big_db, make_content_db
from support.files import fill
from support.metrics import sample
from support.waiting import wait_until

BIG_MB = 200
KILL_SEED = 5_2026
CLI_KILLS = 10
DAEMON_KILLS = 6
#: Where a kill lands, judged from the staging directory; each also gets a seeded random delay.
PHASES = ("snapshot", "pack", "finish", "published")


# --- archives and the staging directory ---------------------------------------------------------


def archive_metadata(path: Path) -> dict[str, Any]:
    """The archive's backup_metadata.json (its first member)."""
    with tarfile.open(path, "r:gz") as tar:
        member = tar.next()
        assert member is not None and member.name == "backup_metadata.json"
        stream = tar.extractfile(member)
        assert stream is not None
        return dict(json.loads(stream.read()))


def extract_db(archive: Path, member: str, dest: Path) -> Path:
    """Stream one database member out of an archive into ``dest`` (for counting its rows)."""
    with tarfile.open(archive, "r:gz") as tar:
        stream = tar.extractfile(member)
        assert stream is not None
        dest.write_bytes(stream.read())
    return dest


def staged(backup_dir: Path) -> list[Path]:
    """What is under `<backup_dir>/.staging` right now."""
    root = backup_dir / ".staging"
    return sorted(root.iterdir()) if root.is_dir() else []


def leftovers(backup_dir: Path) -> list[Path]:
    """Staged entries holding anything: what the next start must have removed. (A lockless
    empty directory is spared for a grace period: it may be an area being created now.)"""
    return [p for p in staged(backup_dir) if not (p.is_dir() and not any(p.iterdir()))]


def published(backup_dir: Path) -> list[Path]:
    return sorted(backup_dir.glob("*.tar.gz"))


def removed(tree: Path) -> bool:
    """`rm -rf`; False when a running backup added a file meanwhile (then try again)."""
    try:
        shutil.rmtree(tree)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def stray_temp_files(backup_dir: Path) -> list[Path]:
    """Anything at the top of the backup directory that is not an archive or the sidecar's own."""
    return [
        p
        for p in backup_dir.iterdir()
        if not p.name.endswith(".tar.gz") and p.name not in (".staging", ".locks")
    ]


# --- a large database, once per module ----------------------------------------------------------


@pytest.fixture(scope="module")
def big_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ~200 MB WAL database of hex text rows, generated in SQL once for the module."""
    path = make_big_db(
        tmp_path_factory.mktemp("big") / "template.db", megabytes=BIG_MB, hex_text=True
    )
    assert path.stat().st_size >= BIG_MB * 1024 * 1024
    return path


@pytest.fixture
def big_db(tmp_path: Path, big_template: Path) -> Path:
    """A private copy of the ~200 MB WAL database."""
    return copy_of(big_template, tmp_path / "data" / "user_data.db")


# --- 1. kill -9 at many points ------------------------------------------------------------------


def kill_plan(seed: int, n: int) -> list[tuple[str, float]]:
    """``n`` kill points: every phase in turn, each with a seeded random delay (0-150 ms)."""
    rng = random.Random(seed)
    return [(PHASES[i % len(PHASES)], rng.uniform(0.0, 0.15)) for i in range(n)]


def reached(phase: str, backup_dir: Path, source_size: int) -> bool:
    """Whether a running backup has reached ``phase``, judged from the files it writes."""
    if phase == "published":
        return bool(published(backup_dir))
    for area in staged(backup_dir):
        try:
            if phase == "snapshot":
                snap = area / "user_data.db"
                return snap.exists() and snap.stat().st_size > source_size // 10
            archive = area / "archive.tmp"
            if phase == "pack":
                return archive.exists() and archive.stat().st_size > 8 * 1024 * 1024
            if phase == "finish":  # the metadata written into the room left at the start
                with archive.open("rb") as head:
                    return head.read(2) == b"\x1f\x8b"
        except (FileNotFoundError, NotADirectoryError):  # not there yet, or a name reservation
            return False
    return False


def kill_at(
    proc: subprocess.Popen[Any], phase: str, delay: float, *, backup_dir: Path, source_size: int
) -> bool:
    """SIGKILL ``proc`` ``delay`` seconds after it reaches ``phase``; False if it finished first."""
    deadline = time.monotonic() + 120
    while not reached(phase, backup_dir, source_size):
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, f"the backup never reached {phase}"
        time.sleep(0.002)  # a poll interval; the deadline above bounds the wait
    if delay:
        time.sleep(delay)  # the random part of the kill point, not a synchronisation
    if proc.poll() is not None:
        return False
    proc.kill()
    proc.wait(timeout=30)
    return True


def judge_aftermath(config: Path, backup_dir: Path, outcomes: dict[str, int]) -> None:
    """No archive, or one that verifies; then the archive is removed for the next point."""
    for archive in published(backup_dir):
        result = run_cli("verify", archive.name, config=config)
        assert result.returncode == 0, f"{archive.name} does not verify: {result.stderr}"
        outcomes["verified_archive"] += 1
        archive.unlink()
    assert not stray_temp_files(backup_dir), stray_temp_files(backup_dir)


@pytest.mark.slow
def test_kill_9_during_backups_leaves_no_bad_archive_and_no_leftover(
    tmp_path: Path,
    big_db: Path,
    sock_path: Path,
    daemons: DaemonRunner,
    writer_process: Callable[..., Any],
    record_property: Callable[[str, object], None],
) -> None:
    """kill -9 of the CLI and of the daemon at seeded points of a 200 MB WAL backup under a
    writer: afterwards either no archive or one that verifies; the killed process's staging
    area is gone after the next start (next CLI run or daemon start); the source passes
    integrity_check and holds every row the writer reported committed."""
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    config = fault_config(tmp_path / "sidecar.yaml", backup_dir=backup_dir,
                          databases={"user": big_db}, socket_path=sock_path)  # fmt: skip
    size = big_db.stat().st_size
    writer = writer_process(big_db, rate=500)
    outcomes = {"killed": 0, "finished_first": 0, "verified_archive": 0}
    plan = kill_plan(KILL_SEED, CLI_KILLS + DAEMON_KILLS)

    for i, (phase, delay) in enumerate(plan[:CLI_KILLS]):
        before = set(staged(backup_dir))
        proc = subprocess.Popen(
            cli_command("backup", "--name", f"cli-kill-{i}", config=config), env=clean_env(),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        killed = kill_at(proc, phase, delay, backup_dir=backup_dir, source_size=size)
        outcomes["killed" if killed else "finished_first"] += 1
        left = set(staged(backup_dir))
        # This run's start removed the previous run's leftovers; at most its own remain
        # (its staging directory and its name reservation). A lockless EMPTY directory may
        # stay for a grace period: a run killed between removing its lock and its rmdir left
        # it, or another is creating it right now; it holds no data.
        survived = before & set(leftovers(backup_dir))
        assert not survived, f"leftovers of a dead run survived a start: {survived}"
        assert len([p for p in left if p.is_dir()]) <= 1, left
        judge_aftermath(config, backup_dir, outcomes)

    final = run_cli("backup", "--name", "cli-after-kills", config=config)
    assert final.returncode == 0, final.stderr
    assert leftovers(backup_dir) == [], staged(backup_dir)
    judge_aftermath(config, backup_dir, outcomes)

    daemon = daemons.start(config)
    for i, (phase, delay) in enumerate(plan[CLI_KILLS:]):
        request = {"op": "backup", "databases": ["user"]}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(sock_path))
            client.sendall(json.dumps(request).encode() + b"\n")
            killed = kill_at(daemon.proc, phase, delay, backup_dir=backup_dir, source_size=size)
        if not killed:  # the backup finished before the kill point: kill the idle daemon
            daemon.proc.kill()
            daemon.proc.wait(timeout=30)
        outcomes["killed" if killed else "finished_first"] += 1
        judge_aftermath(config, backup_dir, outcomes)
        daemon = daemons.start(config)  # its start removes the dead daemon's staging area
        assert leftovers(backup_dir) == [], f"point {i}: {staged(backup_dir)}"

    report = writer.stop()
    assert report["errors"] == 0, report
    assert integrity(big_db) == "ok"
    assert count(big_db, "SELECT count(*) FROM ticks") >= writer.committed() == report["commits"]
    figures = {**outcomes, "points": len(plan), "writer_commits": report["commits"],
               "writer_max_latency_s": round(report["max_latency_s"], 4)}  # fmt: skip
    record_property("kill_points", json.dumps(figures))
    print(f"\nkill -9 points: {figures}")
    assert outcomes["killed"] >= len(plan) // 2, outcomes


# --- 2. full filesystem -------------------------------------------------------------------------


#: Free bytes left for a ~1.6 MB incompressible database: too little for the snapshot; room for
#: the snapshot but not the archive (compressed straight into its file).
FULL_PHASES = {"snapshot": 800_000, "pack": 2_400_000}


@pytest.mark.parametrize("phase", sorted(FULL_PHASES))
def test_full_backup_filesystem_fails_cleanly_with_cli(
    phase: str, tmp_path: Path, tmpfs: Callable[..., Path], sock_path: Path
) -> None:
    """A backup directory whose filesystem fills up during the snapshot, the compression or the
    assembly: exit 1 and one line naming the backup directory and the lack of space; no archive
    and nothing left staged; the next backup after the space is freed succeeds."""
    backup_dir = tmpfs("backups", size="32m")
    db = make_content_db(tmp_path / "data" / "user_data.db", rows=400, blob=4000)
    config = fault_config(tmp_path / "sidecar.yaml", backup_dir=backup_dir,
                          databases={"user": db}, socket_path=sock_path)  # fmt: skip
    fill(backup_dir, leave=FULL_PHASES[phase])

    failed = run_cli("backup", config=config)
    assert failed.returncode == 1, failed.stderr
    line = one_error_line(failed)
    assert str(backup_dir) in line and ("space" in line or "full" in line), line
    assert published(backup_dir) == [] and staged(backup_dir) == []

    (backup_dir / "filler").unlink()
    ok = run_cli("backup", config=config)
    assert ok.returncode == 0, ok.stderr
    assert len(published(backup_dir)) == 1 and staged(backup_dir) == []
    assert run_cli("verify", published(backup_dir)[0].name, config=config).returncode == 0


def healthz_reasons(daemon: Daemon) -> tuple[int, list[str]]:
    status, body = daemon.healthz()
    return status, list(body.get("reasons", []))


def error_runs(daemon: Daemon, policy: str) -> float:
    text = daemon.scrape()
    return sample(text, "backup_sidecar_backup_runs_total", policy=policy, result="error") or 0.0


@pytest.mark.slow
def test_full_backup_filesystem_is_counted_and_reported_by_the_daemon(
    tmp_path: Path, tmpfs: Callable[..., Path], sock_path: Path, daemons: DaemonRunner
) -> None:
    """Scheduled backups into a full filesystem: each failure is logged and counted
    (`backup_runs_total{result="error"}`), `/healthz` turns 503 naming the policy and the lack
    of space, nothing is published or left staged; once space is freed the next scheduled
    backup succeeds and `/healthz` is 200 again."""
    backup_dir = tmpfs("backups", size="32m")
    db = make_content_db(tmp_path / "data" / "user_data.db", rows=400, blob=4000)
    config = fault_config(tmp_path / "sidecar.yaml", backup_dir=backup_dir,
                          databases={"user": db}, socket_path=sock_path,
                          policies={"often": {"every": "2s", "keep": 2}})  # fmt: skip
    fill(backup_dir, leave=FULL_PHASES["pack"])
    daemon = daemons.start(config)

    failure = daemon.log.wait("backup_failed", policy="often", timeout=30)
    assert "space" in failure["error"], failure
    wait_until(lambda: error_runs(daemon, "often") >= 1, what="the error counter")
    _, reasons = wait_until(
        lambda: (r := healthz_reasons(daemon))[0] == 503 and r, what="/healthz 503"
    )
    assert any("often" in r and "space" in r for r in reasons), reasons
    assert published(backup_dir) == []
    assert daemon.request("ping")["pong"] is True

    (backup_dir / "filler").unlink()
    mark = daemon.log.mark()
    daemon.log.wait("backup_completed", policy="often", since=mark, timeout=30)
    wait_until(lambda: healthz_reasons(daemon)[0] == 200, what="/healthz 200 after recovery")
    assert published(backup_dir)
    wait_until(lambda: staged(backup_dir) == [], what="an empty staging directory")


# --- 3. read-only backup directory, deleted backup directory, deleted/replaced database ---------


def test_read_only_backup_directory_fails_cleanly(
    tmp_path: Path, tmpfs: Callable[..., Path], sock_path: Path, daemons: DaemonRunner
) -> None:
    """A read-only backup directory: the CLI backup exits 1 with one line naming the directory;
    the daemon refuses to start on it (exit 1, one clear line); after `remount,rw` both work."""
    backup_dir = tmpfs("backups", size="32m")
    db = make_content_db(tmp_path / "data" / "user_data.db", rows=50)
    config = fault_config(tmp_path / "sidecar.yaml", backup_dir=backup_dir,
                          databases={"user": db}, socket_path=sock_path)  # fmt: skip
    remount = ["mount", "-o", "remount,ro", str(backup_dir)]
    assert subprocess.run(remount, capture_output=True, check=False).returncode == 0

    failed = run_cli("backup", config=config)
    assert failed.returncode == 1, failed.stderr
    line = one_error_line(failed)
    assert str(backup_dir) in line and "Read-only" in line, line

    refused = daemons.start(config, started_ok=False)
    assert refused.proc.wait(timeout=30) == 1
    refused.log.join()
    assert any(str(backup_dir) in ln for ln in refused.log.raw), refused.log.raw

    remount[2] = "remount,rw"
    assert subprocess.run(remount, capture_output=True, check=False).returncode == 0
    assert run_cli("backup", config=config).returncode == 0
    daemon = daemons.start(config)
    assert daemon.request("backup")["archive"]
    assert len(published(backup_dir)) == 2 and staged(backup_dir) == []


@pytest.mark.slow
def test_backup_directory_deleted_under_the_daemon_is_recreated_and_reclaimed(
    tmp_path: Path, sock_path: Path, daemons: DaemonRunner
) -> None:
    """`rm -rf` of the backup directory while the daemon runs: the daemon keeps running,
    recreates the directory at its next scheduled backup (logging `backup_dir_recreated`),
    goes on publishing archives there, and claims it again: a second daemon is still refused."""
    backup_dir = tmp_path / "backups"
    db = make_content_db(tmp_path / "data" / "user_data.db", rows=50)
    config = fault_config(tmp_path / "sidecar.yaml", backup_dir=backup_dir,
                          databases={"user": db}, socket_path=sock_path,
                          policies={"often": {"every": "2s", "keep": 3}})  # fmt: skip
    daemon = daemons.start(config)
    daemon.log.wait("backup_completed", policy="often", timeout=30)

    mark = daemon.log.mark()
    wait_until(lambda: removed(backup_dir), what="rm -rf of the backup directory")
    daemon.log.wait("backup_dir_recreated", since=mark, timeout=30)
    daemon.log.wait("backup_completed", policy="often", since=mark, timeout=30)
    assert published(backup_dir)
    assert daemon.request("ping")["pong"] is True

    other_sock = sock_path.with_name("other.sock")
    other = fault_config(tmp_path / "other.yaml", backup_dir=backup_dir,
                         databases={"user": db}, socket_path=other_sock)  # fmt: skip
    second = daemons.start(other, started_ok=False)
    assert second.proc.wait(timeout=30) == 1


@pytest.mark.slow
def test_database_deleted_or_replaced_under_the_daemon(
    tmp_path: Path, sock_path: Path, daemons: DaemonRunner
) -> None:
    """The live database replaced by another valid database (atomic rename): the next
    scheduled backup holds the new content. Deleted: backups fail naming the missing file,
    `/healthz` is 503 for it, the daemon keeps answering; recreated: backups succeed again."""
    backup_dir = tmp_path / "backups"
    db = make_content_db(tmp_path / "data" / "user_data.db", rows=50, tag="old")
    config = fault_config(tmp_path / "sidecar.yaml", backup_dir=backup_dir,
                          databases={"user": db}, socket_path=sock_path,
                          policies={"often": {"every": "2s", "keep": 3}})  # fmt: skip
    daemon = daemons.start(config)
    daemon.log.wait("backup_completed", policy="often", timeout=30)

    replacement = make_content_db(tmp_path / "data" / "new.db", rows=77, tag="new")
    replacement.replace(db)
    mark = daemon.log.mark()
    done = daemon.log.wait("backup_completed", policy="often", since=mark, timeout=30)
    meta = archive_metadata(backup_dir / f"{done['archive']}.tar.gz")
    assert meta["databases"]["user"]["row_counts"]["items"] == 77

    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    mark = daemon.log.mark()
    failure = daemon.log.wait("backup_failed", policy="often", since=mark, timeout=30)
    assert "does not exist" in failure["error"] and str(db) in failure["error"], failure
    _, reasons = wait_until(
        lambda: (r := healthz_reasons(daemon))[0] == 503 and r, what="/healthz 503"
    )
    assert any("'user'" in r and "does not exist" in r for r in reasons), reasons
    assert daemon.request("ping")["pong"] is True

    make_content_db(tmp_path / "data" / "again.db", rows=5, tag="again").replace(db)
    mark = daemon.log.mark()
    daemon.log.wait("backup_completed", policy="often", since=mark, timeout=30)
    wait_until(lambda: healthz_reasons(daemon)[0] == 200, what="/healthz 200 after recovery")


# --- 4. a source locked past the deadline -------------------------------------------------------


def test_exclusively_locked_source_fails_within_the_deadline_while_daemon_serves(
    tmp_path: Path,
    sock_path: Path,
    daemons: DaemonRunner,
    sql_session: Callable[..., Any],
    record_property: Callable[[str, object], None],
) -> None:
    """A rollback-journal database held inside `BEGIN EXCLUSIVE` (after a write) past
    `lock_timeout: 2s`: the daemon's backup fails with a `locked` error within the deadline
    plus a margin while `ping` and `/metrics` keep answering at once; the CLI fails the same
    way (exit 1, one line); after COMMIT both succeed."""
    timeout_s, margin_s = 2.0, 2.0
    backup_dir = tmp_path / "backups"
    db = make_content_db(tmp_path / "data" / "user_data.db", rows=200, wal=False)
    config = fault_config(tmp_path / "sidecar.yaml", backup_dir=backup_dir,
                          databases={"user": db}, socket_path=sock_path,
                          lock_timeout="2s")  # fmt: skip
    daemon = daemons.start(config)
    app = sql_session(db)
    app.execute("BEGIN EXCLUSIVE")
    app.execute("INSERT INTO items(tag, chk, body) VALUES ('locked', 0, x'00')")

    request = {"op": "backup", "databases": ["user"]}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout_s + margin_s + 5)
        client.connect(str(sock_path))
        started = time.monotonic()
        client.sendall(json.dumps(request).encode() + b"\n")
        served = []
        while True:  # serve checks until the backup answers; each must be quick
            t0 = time.monotonic()
            assert daemon.request("ping")["pong"] is True
            assert "backup_sidecar_build_info" in daemon.scrape()
            served.append(time.monotonic() - t0)
            if time.monotonic() - started > timeout_s + 0.5:
                break
        replies = client.makefile("rb")
        while "ok" not in (reply := json.loads(replies.readline())):
            pass  # progress lines before the answer
        elapsed = time.monotonic() - started
    assert reply["ok"] is False and "locked" in reply["error"]["message"], reply
    assert elapsed < timeout_s + margin_s, elapsed
    assert max(served) < 1.0, served

    t0 = time.monotonic()
    cli = run_cli("backup", config=config)
    cli_elapsed = time.monotonic() - t0
    assert cli.returncode == 1
    assert "locked" in one_error_line(cli)
    assert cli_elapsed < timeout_s + margin_s + 3.0, cli_elapsed  # + interpreter start
    assert published(backup_dir) == [] and staged(backup_dir) == []

    app.execute("COMMIT")
    assert daemon.request("backup")["archive"]
    assert run_cli("backup", config=config).returncode == 0
    figures = {
        "socket_backup_failed_after_s": round(elapsed, 3),
        "cli_failed_after_s": round(cli_elapsed, 3),
        "slowest_ping_plus_scrape_s": round(max(served), 3),
        "checks": len(served),
    }
    record_property("exclusive_lock", json.dumps(figures))
    print(f"\nexclusive lock: {figures}")


# --- 5. a steady writer during the whole backup -------------------------------------------------


@pytest.mark.slow
def test_steady_writer_during_large_backup_sees_no_error(
    tmp_path: Path,
    big_db: Path,
    sock_path: Path,
    writer_process: Callable[..., Any],
    record_property: Callable[[str, object], None],
) -> None:
    """A writer committing 200 transactions/s through the whole CLI backup of the 200 MB WAL
    database: zero writer errors, the archive verifies; the writer's worst and p99 commit
    latency during the backup are recorded (the target lives in the benchmark issue)."""
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    config = fault_config(tmp_path / "sidecar.yaml", backup_dir=backup_dir,
                          databases={"user": big_db}, socket_path=sock_path)  # fmt: skip
    writer = writer_process(big_db, rate=200)
    t0 = time.monotonic()
    result = run_cli("backup", "--json", config=config)
    duration = time.monotonic() - t0
    report = writer.stop()
    assert result.returncode == 0, result.stderr
    assert report["errors"] == 0, report
    assert run_cli("verify", json.loads(result.stdout)["name"], config=config).returncode == 0
    figures = {"backup_s": round(duration, 2), "commits": report["commits"],
               "max_latency_ms": round(report["max_latency_s"] * 1000, 1),
               "p99_latency_ms": round(report["p99_latency_s"] * 1000, 1)}  # fmt: skip
    record_property("steady_writer", json.dumps(figures))
    print(f"\nsteady writer during a {BIG_MB} MB backup: {figures}")


# --- 6. rows only in -wal -----------------------------------------------------------------------


def test_rows_only_in_wal_are_in_the_daemon_archive(
    tmp_path: Path, sock_path: Path, daemons: DaemonRunner, sql_session: Callable[..., Any]
) -> None:
    """Rows committed by a connection that keeps the database open with
    `wal_autocheckpoint=0` live only in `-wal` (the main file alone lacks them); a backup through
    the daemon's socket holds every one, and the archive verifies."""
    backup_dir = tmp_path / "backups"
    db = make_content_db(tmp_path / "data" / "user_data.db", rows=100)
    config = fault_config(tmp_path / "sidecar.yaml", backup_dir=backup_dir,
                          databases={"user": db}, socket_path=sock_path)  # fmt: skip
    app = sql_session(db)
    app.execute("PRAGMA wal_autocheckpoint=0")
    for i in range(50):
        app.execute(
            f"INSERT INTO items(tag, chk, body) VALUES ('wal-only', {i}, randomblob({100 + i}))"
        )
    main_only = tmp_path / "main-only.db"
    shutil.copyfile(db, main_only)  # the main file without its -wal
    assert Path(f"{db}-wal").stat().st_size > 0
    assert count(main_only, "SELECT count(*) FROM items WHERE tag = 'wal-only'") == 0

    daemon = daemons.start(config)
    result = daemon.request("backup", databases=["user"])
    archive = backup_dir / f"{result['archive']}.tar.gz"
    copy = extract_db(archive, "user_data.db", tmp_path / "from-archive.db")
    assert count(copy, "SELECT count(*) FROM items WHERE tag = 'wal-only'") == 50
    assert count(copy) == 150
    assert run_cli("verify", result["archive"], config=config).returncode == 0


# --- 7. two daemons, two CLI backups of one name ------------------------------------------------


def test_second_daemon_on_the_same_backup_directory_refuses(
    tmp_path: Path, sock_path: Path, daemons: DaemonRunner
) -> None:
    """A second daemon on a backup directory a daemon already runs on exits 1 within the
    deadline with one line naming the directory and the other daemon; the first keeps serving."""
    backup_dir = tmp_path / "backups"
    db = make_content_db(tmp_path / "data" / "user_data.db", rows=10)
    first = fault_config(tmp_path / "first.yaml", backup_dir=backup_dir,
                         databases={"user": db}, socket_path=sock_path)  # fmt: skip
    daemon = daemons.start(first)
    second_cfg = fault_config(tmp_path / "second.yaml", backup_dir=backup_dir,
                              databases={"user": db},
                              socket_path=sock_path.with_name("second.sock"))  # fmt: skip
    second = daemons.start(second_cfg, started_ok=False)
    assert second.proc.wait(timeout=30) == 1
    second.log.join()
    lines = [ln for ln in second.log.raw if ln.startswith(ERROR_PREFIX)]
    assert len(lines) == 1 and str(backup_dir) in lines[0], second.log.raw
    assert "another backup-sidecar daemon" in lines[0], lines
    assert daemon.request("ping")["pong"] is True


@pytest.mark.slow
def test_two_cli_backups_with_one_name_have_exactly_one_winner(
    tmp_path: Path, sock_path: Path
) -> None:
    """Two CLI backups started together with the same `--name`, over the same database (the
    database lock decides) or over different ones (only link(2) decides), five rounds each:
    exactly one exits 0 and its archive verifies; the other exits 1 with one clear line."""
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    arrow = make_content_db(tmp_path / "data" / "arrow_database.db", rows=3000, blob=1000)
    user = make_content_db(tmp_path / "data" / "user_data.db", rows=3000, blob=1000)
    config = fault_config(
        tmp_path / "sidecar.yaml",
        backup_dir=backup_dir,
        databases={"arrow": arrow, "user": user},
        socket_path=sock_path,
    )
    losers: list[str] = []
    for rnd in range(10):
        name = f"race-{rnd}"
        pair = (
            [["--db", "user"], ["--db", "user"]]
            if rnd % 2
            else [["--db", "user"], ["--db", "arrow"]]
        )
        procs = [
            subprocess.Popen(cli_command("backup", "--name", name, *dbs, config=config),
                             env=clean_env(), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for dbs in pair
        ]  # fmt: skip
        results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
        codes = sorted(r[0] for r in results)
        assert codes == [0, 1], results
        loser = next(r for r in results if r[0] == 1)
        line = one_error_line(subprocess.CompletedProcess([], 1, loser[1], loser[2]))
        assert name in line or "busy" in line, line
        losers.append(line.removeprefix(ERROR_PREFIX))
        assert published(backup_dir) == [backup_dir / f"{name}.tar.gz"]
        assert run_cli("verify", name, config=config).returncode == 0
        (backup_dir / f"{name}.tar.gz").unlink()
        assert staged(backup_dir) == []
    print("\nlosers said:\n  " + "\n  ".join(sorted(set(losers))))
