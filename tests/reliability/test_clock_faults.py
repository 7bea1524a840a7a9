"""Wall-clock faults (issue 5, fault 8): the clock of a running daemon steps back an hour, then
forward a day, through libfaketime (Debian's `faketime`; the test installs it as root if it is
missing, and skips, saying why, where it cannot).

The daemon runs with `LD_PRELOAD=libfaketime.so.1`, `FAKETIME_TIMESTAMP_FILE` (re-read on every
call: `FAKETIME_NO_CACHE=1`) and `FAKETIME_DONT_FAKE_MONOTONIC=1`, so only the wall clock jumps,
as an NTP step does; CLOCK_MONOTONIC runs on. libfaketime 0.9.10 answers EINVAL to
`clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)` in that mode, which is how Python 3.11's
`time.sleep` sleeps, so the daemon under test gets a `sitecustomize` that sleeps on a condition
wait instead (the only change to the process; condition waits are unaffected).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backup_sidecar.archiver import DatabaseSpec, create_backup, default_name
from support.clock import step_clock
from support.daemon import Daemon, DaemonRunner, fault_config
from support.databases import make_content_db
from support.waiting import wait_until


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def seed_hour_old_archives(
    backup_dir: Path, db: Path, *, policy: str, seconds: int
) -> dict[str, str]:
    """Archives of ``policy`` named for every second from an hour ago on (what a daemon wrote
    then), so that a clock stepped back an hour reuses their names; name -> sha256."""
    spec = DatabaseSpec("user", db)
    start = datetime.now(UTC) - timedelta(hours=1, seconds=3)
    seeded = {}
    for s in range(seconds):
        at = start + timedelta(seconds=s)
        info = create_backup([spec], backup_dir=backup_dir, name=default_name(policy, at),
                             policy=policy, now=at)  # fmt: skip
        seeded[info.name] = sha256(info.path)
    return seeded


@pytest.fixture
def clocked(
    tmp_path: Path, fake_clock: tuple[Path, dict[str, str]], sock_path: Path, daemons: DaemonRunner
) -> Callable[..., Daemon]:
    """Start a daemon that obeys the fake clock, over one content database of ``rows`` rows
    (`tmp_path`/data/user_data.db) backed up to `tmp_path`/backups, with ``policies`` and any
    other section given."""

    def start(*, rows: int, policies: dict[str, Any], **sections: Any) -> Daemon:
        backup_dir = tmp_path / "backups"
        backup_dir.mkdir()
        db = make_content_db(tmp_path / "data" / "user_data.db", rows=rows)
        config = fault_config(tmp_path / "sidecar.yaml", backup_dir=backup_dir,
                              databases={"user": db}, socket_path=sock_path,
                              policies=policies, **sections)  # fmt: skip
        return daemons.start(config, env=fake_clock[1])

    return start


def completed_after(daemon: Daemon, mark: int, policy: str, n: int) -> list[str]:
    """Wait for ``n`` completed backups of ``policy`` after ``mark``; their archive names."""
    daemon.log.wait("backup_completed", since=mark, policy=policy, count=n, timeout=40)
    return [e["archive"] for e in daemon.log.find("backup_completed", since=mark, policy=policy)]


def pruned_the_newest(daemon: Daemon, policy: str) -> list[str]:
    """Archives that a prune deleted while they were the newest completed backup of
    ``policy`` (the log is one ordered stream, so "newest so far" is exact)."""
    newest = None
    bad = []
    for event in list(daemon.log.events):
        if event.get("policy") != policy:
            continue
        if event["event"] == "backup_completed":
            newest = event["archive"]
        elif event["event"] == "archive_pruned" and event["archive"] == newest:
            bad.append(newest)
    return bad


@pytest.mark.slow
def test_wall_clock_steps_back_an_hour_and_forward_a_day(
    tmp_path: Path,
    fake_clock: tuple[Path, dict[str, str]],
    clocked: Callable[..., Daemon],
    record_property: Callable[[str, object], None],
) -> None:
    """The daemon's wall clock steps back an hour (onto names its archives from an hour ago
    hold) and then forward a day, with two `every: 2s` policies running: every archive that
    existed keeps its bytes (no name is overwritten), the backups after each step succeed under
    distinct names, a prune never deletes the backup just written (the newest content), and
    both schedules keep producing archives after both steps."""
    clock, _env = fake_clock
    daemon = clocked(rows=200, policies={"often": {"every": "2s", "keep": 1000},
                                         "kept": {"every": "2s", "keep": 2}})  # fmt: skip
    backup_dir, db = daemon.backup_dir, tmp_path / "data" / "user_data.db"
    completed_after(daemon, 0, "kept", 3)
    completed_after(daemon, 0, "often", 2)
    seeded = seed_hour_old_archives(backup_dir, db, policy="often", seconds=45)

    figures: dict[str, object] = {}
    for step in ("-1h", "+1d"):
        before = {p.name: sha256(p) for p in daemon.archives() if p.name.startswith("often")}
        mark = daemon.log.mark()
        step_clock(clock, step)
        often = completed_after(daemon, mark, "often", 3)
        kept = completed_after(daemon, mark, "kept", 3)
        assert not daemon.log.find("backup_failed", since=mark), daemon.log.find("backup_failed")
        for name, digest in before.items():  # "often" keeps everything: nothing may change
            assert sha256(backup_dir / name) == digest, f"{name} was overwritten after {step}"
        assert len(set(often)) == len(often) and not set(often) & set(before), often
        figures[step] = {"often": often, "kept": kept}
    for name, digest in seeded.items():
        assert sha256(backup_dir / f"{name}.tar.gz") == digest, name
    assert any(n.endswith("-2") for n in figures["-1h"]["often"]), figures  # type: ignore[index]
    assert pruned_the_newest(daemon, "kept") == [], pruned_the_newest(daemon, "kept")
    assert daemon.request("ping")["pong"] is True
    record_property("clock_steps", str(figures))
    print(f"\nclock steps: {figures}")


# --- issue 13 item 3: steps must not cost restore points or silence alarms ---------------------


def written_since(daemon: Daemon, mark: int, policy: str) -> list[str]:
    """Archives of ``policy`` completed since ``mark``, in the order they were written."""
    return [e["archive"] for e in daemon.log.find("backup_completed", since=mark, policy=policy)]


def on_disk(backup_dir: Path, policy: str) -> set[str]:
    return {p.name.removesuffix(".tar.gz") for p in backup_dir.glob(f"{policy}_*.tar.gz")}


def test_a_clock_stepped_back_a_day_keeps_the_archives_written_after_it(
    fake_clock: tuple[Path, dict[str, str]],
    clocked: Callable[..., Daemon],
) -> None:
    """`every: 2s, keep: 3`, then the wall clock steps back a day: retention keeps the three
    archives written last (the three dated before the step go), `list` shows archives in the
    order they were written, and the restore drill restores one written after the step. Before,
    the three from "the future" were kept as the newest, each new archive was pruned at the next
    backup, and `list` and the drill offered day-old data as the newest."""
    clock, _env = fake_clock
    daemon = clocked(rows=50, policies={"often": {"every": "2s", "keep": 3},
                                        "drill": {"every": "2s", "keep": 0}})  # fmt: skip
    backup_dir = daemon.backup_dir
    before = completed_after(daemon, 0, "often", 3)
    mark = daemon.log.mark()
    step_clock(clock, "-1d")

    def kept_the_last_written() -> bool:
        written = written_since(daemon, mark, "often")
        return len(written) >= 3 and on_disk(backup_dir, "often") == set(written[-3:])

    wait_until(kept_the_last_written, timeout=40, what="the three archives written last kept")
    assert not on_disk(backup_dir, "often") & set(before)
    assert pruned_the_newest(daemon, "often") == []
    written = written_since(daemon, 0, "often")
    listed = [a["name"] for a in daemon.request("list")["archives"] if a["policy"] == "often"]
    assert listed == [n for n in reversed(written) if n in listed], (listed, written)
    drill_mark = daemon.log.mark()
    drilled = daemon.log.wait("restore_drill_completed", since=drill_mark, timeout=30)
    assert drilled["archive"] in written_since(daemon, mark, "often"), drilled


def fake_now(offset: timedelta) -> datetime:
    return datetime.now(UTC) + offset


def test_a_cron_policy_stepped_back_is_retimed_and_its_overdue_check_fires(
    fake_clock: tuple[Path, dict[str, str]],
    clocked: Callable[..., Daemon],
) -> None:
    """A `*/2 * * * *` policy with `max_backup_age: 4s`, the wall clock stepped back an hour
    right after a backup: its next run is retimed within two minutes of the new wall time (it
    stayed at the pre-step time, an hour away), and `/healthz` turns 503 once no backup came for
    4 s, though the newest archive is dated in the future; a backup clears it. Before, `/healthz`
    stayed 200 for the whole hour without a backup."""
    clock, _env = fake_clock
    daemon = clocked(rows=50, policies={"cron": {"schedule": "*/2 * * * *", "keep": 10}},
                     health={"interval": "1s", "max_backup_age": {"cron": "4s"}})  # fmt: skip
    completed_after(daemon, 0, "cron", 1)  # the catch-up run at start
    # Back an hour and a little more, to 30 s past an even minute: the retimed run is then 90 s
    # away, so no backup can come before the overdue check fires (a step that landed just before
    # a boundary had the policy run at once, and the reason was the ordinary one).
    now = datetime.now(UTC).timestamp()
    step = timedelta(seconds=3600 + int(now - 3600 - 30) % 120)
    step_clock(clock, f"-{int(step.total_seconds())}")  # seconds

    def retimed() -> bool:
        when = daemon.request("status")["next_runs"]["cron"]
        return when is not None and datetime.fromisoformat(when) <= fake_now(
            -step + timedelta(minutes=2, seconds=5)
        )

    wait_until(retimed, timeout=15, what="the cron policy retimed to the stepped clock")
    _status, body = wait_until(
        lambda: (h := daemon.healthz())[0] == 503 and h, timeout=20, what="/healthz 503"
    )
    assert any("'cron'" in r and "no new backup" in r for r in body["reasons"]), body
    daemon.request("backup", policy="cron")
    wait_until(lambda: daemon.healthz()[0] == 200, timeout=5, what="/healthz 200 after a backup")


def test_a_cron_policy_stepped_forward_past_its_run_runs_at_once(
    fake_clock: tuple[Path, dict[str, str]],
    clocked: Callable[..., Daemon],
) -> None:
    """A daily cron policy due 15 minutes from now, and the wall clock stepped forward 30
    minutes: the run it stepped past happens within seconds, once. Before, the scheduler slept
    on its old timer for the 15 minutes (a step past a daily run of a later day: up to a day)."""
    clock, _env = fake_clock
    due = datetime.now(UTC) + timedelta(minutes=15)
    daemon = clocked(rows=50, policies={"daily": {"schedule": f"{due.minute} {due.hour} * * *",
                                                  "keep": 10}})  # fmt: skip
    completed_after(daemon, 0, "daily", 1)  # the catch-up run at start
    mark = daemon.log.mark()
    step_clock(clock, "+30m")
    daemon.log.wait("backup_completed", since=mark, policy="daily", timeout=20)
    when = datetime.fromisoformat(daemon.request("status")["next_runs"]["daily"])
    assert when > fake_now(timedelta(hours=23)), when  # tomorrow's, not a second run today
    assert len(written_since(daemon, mark, "daily")) == 1
