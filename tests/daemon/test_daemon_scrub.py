"""The scheduled scrub in a real daemon: a rotten archive is found, marked, counted in the
metrics and reported by `/healthz` until its cause goes; the socket's `scrub` op runs one now."""

from __future__ import annotations

import json
import shutil
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backup_sidecar import archiver
from backup_sidecar.archiver.damage import marker_path
from backup_sidecar.control import ControlError
from support.daemon import DaemonRunner
from support.databases import make_db
from support.metrics import sample
from support.waiting import wait_until

DAMAGED = "backup_sidecar_archives_damaged"
SCRUBS = "backup_sidecar_scrub_runs_total"
SCRUB_LAST = "backup_sidecar_scrub_last_success_timestamp_seconds"


def flip_database_byte(path: Path) -> None:
    """One byte flipped inside the database's gzip member; the metadata member stays intact."""
    data = bytearray(path.read_bytes())
    first = zlib.decompressobj(31)
    first.decompress(bytes(data))
    start = len(data) - len(first.unused_data)
    data[start + (len(data) - start) // 2] ^= 0x55
    path.write_bytes(bytes(data))


def test_scheduled_scrub_marks_rot_alarms_and_clears(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    tmp_path: Path,
    backup_dir: Path,
) -> None:
    """`scrub: {every: 1s}`: the daemon reads every archive, marks the rotten newest `daily`
    damaged (marker next to it, `archive_damaged` logged), `archives_damaged{policy="daily"}`
    reads 1, the scrub counters move, and `/healthz` answers 503 naming the archive and its
    fault. Deleting the damaged archive by hand clears the alarm and the metric, and the next
    scrub removes the orphaned marker. The socket's `scrub` op reports what it read."""
    db = make_db(tmp_path / "user_data.db", wal=True, rows=2000)
    t0 = datetime.now(UTC) - timedelta(hours=2)
    paths = [
        archiver.create_backup(
            [archiver.DatabaseSpec("user", db)],
            backup_dir=backup_dir,
            name=f"daily_{i}",
            policy="daily",
            now=t0 + timedelta(hours=i),
        ).path
        for i in range(2)
    ]
    flip_database_byte(paths[1])
    cfg = daemon_config(
        databases={"user": db},
        policies={"daily": {"keep": 3}, "pre_restore": {"keep": 10}},
        scrub={"every": "1s"},
    )
    d = daemons.start(cfg)
    event = d.log.wait("archive_damaged", archive="daily_1", found_by="scrub")
    assert json.loads(marker_path(paths[1]).read_text())["reason"] == event["reason"]

    def unhealthy() -> list[str] | None:
        code, body = d.healthz()
        reasons = [r for r in body.get("reasons", []) if "daily_1" in r]
        return reasons if code == 503 and reasons else None

    reasons = wait_until(unhealthy, what="/healthz 503 naming daily_1")
    assert "the newest archive 'daily_1' is damaged: marked damaged by scrub" in reasons[0]
    assert event["reason"] in reasons[0]

    def damaged_counted() -> str | None:
        text = d.scrape()
        return text if sample(text, DAMAGED, policy="daily") == 1 else None

    text = wait_until(damaged_counted, what="archives_damaged 1")
    assert (sample(text, SCRUBS, result="ok") or 0) >= 1
    assert (sample(text, SCRUB_LAST) or 0) > 0
    listed = {a["name"]: a for a in d.request("list")["archives"]}
    assert listed["daily_1"]["status"] == "damaged"
    assert listed["daily_0"]["status"] == "verified"

    paths[1].unlink()  # the operator removes the damaged archive
    wait_until(lambda: d.healthz()[0] == 200, what="/healthz 200 again")
    wait_until(lambda: sample(d.scrape(), DAMAGED, policy="daily") == 0, what="metric cleared")
    wait_until(lambda: not marker_path(paths[1]).exists(), what="orphaned marker removed")
    report = d.request("scrub")
    assert report == {"passed": ["daily_0"], "damaged": [], "skipped": []}


def test_planted_marker_directory_never_stops_a_scrub(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    tmp_path: Path,
    backup_dir: Path,
) -> None:
    """Outside attack 1, finding 2: a directory planted under an orphan marker's name
    (`gone.tar.gz.damaged`) made every scrub fail (`Is a directory`), the socket's `scrub` op
    crash and `scrub --json` print nothing. Now the directory is left alone with one warning,
    an orphan marker that is a symlink is unlinked (never its target), a regular one removed,
    and the scheduled scrub, the socket op and `scrub --json` all complete."""
    db = make_db(tmp_path / "user_data.db", wal=True, rows=200)
    archiver.create_backup(
        [archiver.DatabaseSpec("user", db)],
        backup_dir=backup_dir,
        name="daily_0",
        policy="daily",
        now=datetime.now(UTC),
    )
    planted = backup_dir / "gone.tar.gz.damaged"
    (planted / "inner").mkdir(parents=True)
    (planted / "inner" / "keep.txt").write_text("planted\n")
    outside = tmp_path / "outside.txt"
    outside.write_text("not the sidecar's\n")
    (backup_dir / "link.tar.gz.damaged").symlink_to(outside)
    (backup_dir / "old.tar.gz.damaged").write_text("{}")
    cfg = daemon_config(
        databases={"user": db}, policies={"daily": {"keep": 3}}, scrub={"every": "1s"}
    )
    d = daemons.start(cfg)
    d.log.wait("scrub_completed")
    left = d.log.wait("damage_marker_left", path=str(planted))
    assert "not a regular file" in left["reason"]
    assert (planted / "inner" / "keep.txt").read_text() == "planted\n"
    assert not (backup_dir / "link.tar.gz.damaged").is_symlink()
    assert outside.read_text() == "not the sidecar's\n"
    assert not (backup_dir / "old.tar.gz.damaged").exists()
    assert not d.log.find("scrub_failed")
    assert d.request("scrub") == {"passed": ["daily_0"], "damaged": [], "skipped": []}
    done = d.cli("scrub", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["passed"] == ["daily_0"]
    assert d.healthz()[0] == 200


def test_failed_scrub_is_a_healthz_reason_until_one_succeeds(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    tmp_path: Path,
    backup_dir: Path,
) -> None:
    """Outside attack 1, finding 2: a scrub that could not run only moved
    `scrub_runs_total{result="error"}`; /healthz stayed 200. Now, with the backup directory
    replaced by a file, the scheduled scrub's failure is a /healthz reason (and the socket op
    answers an error, not a crash; `scrub --json` prints the error object); once the directory
    is back, the next scrub succeeds and the reason clears."""
    db = make_db(tmp_path / "user_data.db", wal=True, rows=200)
    cfg = daemon_config(
        databases={"user": db}, policies={"daily": {"keep": 3}}, scrub={"every": "1s"}
    )
    d = daemons.start(cfg)
    d.log.wait("scrub_completed")
    shutil.rmtree(backup_dir)
    backup_dir.write_text("not a directory\n")

    def scrub_reason() -> list[str] | None:
        code, body = d.healthz()
        found = [r for r in body.get("reasons", []) if r.startswith("the last scrub failed")]
        return found if code == 503 and found else None

    reasons = wait_until(scrub_reason, what="/healthz naming the failed scrub")
    assert str(backup_dir) in reasons[0]
    assert (sample(d.scrape(), SCRUBS, result="error") or 0) >= 1
    with pytest.raises(ControlError) as failed:
        d.request("scrub")
    assert str(backup_dir) in str(failed.value)
    shown = d.cli("scrub", "--json")
    assert shown.returncode != 0
    assert json.loads(shown.stdout)["ok"] is False
    backup_dir.unlink()
    backup_dir.mkdir()
    wait_until(lambda: d.healthz()[0] == 200, what="/healthz 200 after a scrub succeeded")
