"""A running daemon whose backup directory holds hostile files (issue 12, item 5).

Before the fix any one of these files (metadata 100,000 levels deep, a 4,301-digit number, a
pax ``size=abc``, 3,000 empty gzip members, a ``created_at`` UTC cannot hold) raised out of
the archive listing: the daemon refused to start, and a running one's prunes crashed so
retention stopped. Here a real daemon starts on such a directory, lists every hostile file as
damaged (socket, `ctl list`, the CLI's own `list`) and keeps pruning its policy to its keep
count while the hostile files stay, untouched.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backup_sidecar.archiver import DatabaseSpec, create_backup
from support.archives import HOSTILE, GoodArchive
from support.daemon import Daemon, DaemonRunner
from support.databases import make_db
from support.metrics import sample
from support.waiting import wait_until

OLD_GOOD = 5


def verified(d: Daemon, policy: str) -> list[str]:
    return sorted(
        a["name"]
        for a in d.request("list")["archives"]
        if a["policy"] == policy and a["status"] == "verified"
    )


def test_daemon_with_hostile_archives_starts_lists_and_keeps_pruning(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    backup_dir: Path,
    tmp_path: Path,
    good: GoodArchive,
) -> None:
    """Five older good `often` archives and every hostile file of the issue in the backup
    directory: the daemon starts (its catch-up backup runs, the metrics are seeded), prunes
    `often` to its keep of 1 and, after more scheduled backups and one more hostile file
    dropped in while it runs, still holds exactly one good `often` archive; each hostile file
    is listed damaged with a one-line reason by the socket, `ctl list` and the CLI, is refused
    by verify as corrupt, and is never deleted."""
    live = make_db(tmp_path / "user_data.db", wal=True, rows=50)
    for day in range(1, OLD_GOOD + 1):
        when = datetime(2025, 1, day, tzinfo=UTC)
        create_backup([DatabaseSpec("user", live)], backup_dir=backup_dir,
                      name=f"often_202501{day:02d}_000000", policy="often", now=when)  # fmt: skip
    hostile = {}
    for i, (case, (build, _)) in enumerate(sorted(HOSTILE.items())):
        name = f"often_20240101_{i:06d}"
        (backup_dir / f"{name}.tar.gz").write_bytes(build(good))
        hostile[name] = case
    before = {name: (backup_dir / f"{name}.tar.gz").read_bytes() for name in hostile}

    policies = {"often": {"every": "2s", "keep": 1}}
    d = daemons.start(daemon_config(databases={"user": live}, policies=policies))
    d.log.wait("archive_pruned", count=OLD_GOOD, timeout=60)
    first = d.log.wait("backup_completed", policy="often", timeout=60)
    # One more lands while the daemon runs: its next prunes must not crash on it either.
    late = "often_20240102_000000"
    (backup_dir / f"{late}.tar.gz").write_bytes(HOSTILE["metadata_nested_100000_deep"][0](good))
    hostile[late] = "metadata_nested_100000_deep (while running)"
    before[late] = (backup_dir / f"{late}.tar.gz").read_bytes()
    mark = d.log.mark()
    d.log.wait("backup_completed", policy="often", since=mark, count=2, timeout=60)

    def just_one() -> list[str] | None:
        names = verified(d, "often")
        return names if len(names) == 1 else None

    kept = wait_until(just_one, timeout=30, what="one verified often archive")
    assert kept[0] != first["archive"], "the later scheduled backups were not pruned"
    assert not d.log.find("prune_failed")

    listed = {a["name"]: a for a in d.request("list")["archives"]}
    for name, case in hostile.items():
        assert listed[name]["status"] == "damaged", (case, listed[name])
        error = listed[name]["error"]
        assert error and "\n" not in error and len(error) < 300, (case, error)
    assert {n: (backup_dir / f"{n}.tar.gz").read_bytes() for n in hostile} == before

    ctl = d.ctl("list", "--json")
    assert ctl.returncode == 0, ctl.stderr
    ctl_status = {a["name"]: a["status"] for a in json.loads(ctl.stdout)["archives"]}
    assert all(ctl_status[n] == "damaged" for n in hostile), ctl_status
    cli = d.cli("list")
    assert cli.returncode == 0, cli.stderr
    assert "Traceback" not in cli.stderr
    lines = [ln for ln in cli.stdout.splitlines() if ln.split(" ", 1)[0] in hostile]
    assert len(lines) == len(hostile) and all("damaged" in ln for ln in lines), cli.stdout

    name = next(iter(hostile))
    verify = d.ctl("verify", name)
    assert verify.returncode == 1 and "corrupt" in verify.stderr, verify.stderr
    status, _ = d.healthz()
    assert status in (200, 503)
    assert (sample(d.scrape(), "backup_sidecar_archives", policy="often") or 0) >= 1
