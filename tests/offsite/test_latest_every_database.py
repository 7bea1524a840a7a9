"""`restore --latest --from-offsite` brings EVERY database back, each from the newest confirmed
copy that holds it, with policies `hourly: {databases: [user]}` and `daily` (both): through the
real CLI against the session's SeaweedFS and a file:// directory, and through a real daemon's
control socket. Archives are made by the real `backup` (a writer process committing to the user
database meanwhile) and uploaded by the offsite library."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backup_sidecar import archiver
from backup_sidecar.offsite import Lease, Store, parse_target
from support.archives import flip_database_byte
from support.cli import cli_env, run_cli
from support.daemon import DaemonRunner, quiet_config
from support.databases import Writer, dump, integrity, make_db
from support.offsite import fast_retry, s3_store
from support.seaweed import SeaweedServer
from support.waiting import wait_until

DAILY = "daily_20261207_010000"
HOURLY = "hourly_20261207_020000"
POLICIES = {"daily": {"keep": 5}, "hourly": {"keep": 5, "databases": ["user"]}}


@dataclass
class Layout:
    """A host with two databases whose newest offsite copy (`hourly`) holds only `user`."""

    root: Path
    store: Store
    lease: Lease
    env: dict[str, str]
    config: Path

    @property
    def backups(self) -> Path:
        return self.root / "backups"

    @property
    def user(self) -> Path:
        return self.root / "data" / "user_data.db"

    @property
    def arrow(self) -> Path:
        return self.root / "data" / "arrow_database.db"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, config=self.config, env=self.env, timeout=300)

    def backup(self, policy: str, name: str, *, rotten: bool = False) -> str:
        """A real backup of ``policy`` named ``name``, uploaded (its database bytes flipped
        first when ``rotten``: the object matches its record, the archive fails verify)."""
        made = self.cli("backup", "--policy", policy, "--name", name)
        assert made.returncode == 0, made.stderr
        archive = self.backups / f"{name}.tar.gz"
        if rotten:
            flip_database_byte(archive)
        return self.store.upload(archive, lease=self.lease).name

    def state(self) -> dict[str, list[str]]:
        return {"user": dump(self.user), "arrow": dump(self.arrow)}

    def wipe(self) -> None:
        """A lost host: no backup directory, no databases."""
        shutil.rmtree(self.root / "backups")
        shutil.rmtree(self.root / "data")


def _insert(db: Path, body: str) -> None:
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO items(body) VALUES (?)", (body,))
    conn.commit()
    conn.close()


@pytest.fixture
def layout(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Layout]:
    root = tmp_path / "host"
    make_db(root / "data" / "user_data.db", wal=True, rows=200, tag="user")
    make_db(root / "data" / "arrow_database.db", wal=False, rows=150, tag="arrow")
    (root / "backups").mkdir()
    env = cli_env(root / "backups", user=root / "data" / "user_data.db")
    if backend == "file":
        url = f"file://{tmp_path / 'offsite'}"
        store = Store(parse_target(url), retry=fast_retry())
        section: dict[str, object] = {"url": url}
    else:
        server: SeaweedServer = request.getfixturevalue("seaweed")
        bucket: str = request.getfixturevalue("shared_bucket")
        prefix = f"latest-{tmp_path.name}"
        store = s3_store(server, bucket, prefix, retry=fast_retry())
        section = {"url": f"s3://{bucket}/{prefix}", "endpoint": server.endpoint,
                   "path_style": True}  # fmt: skip
        env.update(server.env())
    config = tmp_path / "sidecar.yaml"
    config.write_text(json.dumps({"policies": POLICIES, "offsite": section}))
    lease = Lease(store, ttl=300)
    assert lease.acquire().writable
    try:
        yield Layout(root, store, lease, env, config)
    finally:
        lease.release()


def _daily_then_hourly(lay: Layout) -> dict[str, list[str]]:
    """`daily` (both) with a writer committing to the user database, then a change to it and
    `hourly` (user only), uploaded in that order; what each database should be restored to."""
    writer = Writer.start(lay.user, rate=200)
    try:
        wait_until(lambda: writer.committed() >= 10, what="the writer committing")
        lay.backup("daily", DAILY)
        writer.stop()
    finally:
        writer.close()
    arrow_daily = dump(lay.arrow)
    _insert(lay.user, "after the daily backup")
    lay.backup("hourly", HOURLY)  # same upload second: `hourly_` > `daily_` breaks the tie
    return {"user": dump(lay.user), "arrow": arrow_daily}


def test_one_command_brings_every_database_back_and_db_restricts(layout: Layout) -> None:
    """The newest copy (`hourly`) holds only `user`: on a wiped host the one command restores
    `user` from it and `arrow` from `daily`, both equal to their backups (dump, integrity_check);
    the JSON says which archive gave each. Then, with both databases changed, `--db arrow`
    restores `arrow` only (from `daily`, never downloading `hourly` again) and leaves `user`."""
    expected = _daily_then_hourly(layout)
    layout.wipe()

    result = layout.cli("restore", "--latest", "--from-offsite", "--force", "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["databases"] == {"user": HOURLY, "arrow": DAILY}
    assert sorted(answer["restored"]) == ["arrow", "user"] and answer["not_found"] == []
    assert [a["archive"] for a in answer["archives"]] == [HOURLY, DAILY]
    assert answer["archive"] is None
    assert layout.state() == expected
    assert integrity(layout.user) == "ok" and integrity(layout.arrow) == "ok"

    _insert(layout.user, "kept: not restored")
    _insert(layout.arrow, "undone by the restore")
    user_now = dump(layout.user)
    only = layout.cli("restore", "--latest", "--from-offsite", "--force", "--db", "arrow")
    assert only.returncode == 0, only.stderr
    assert f"restored arrow from {DAILY}" in only.stdout
    assert HOURLY not in only.stderr
    assert dump(layout.arrow) == expected["arrow"] and dump(layout.user) == user_now


def test_a_damaged_newest_copy_falls_back_for_its_database_only(layout: Layout) -> None:
    """A newer `hourly` copy that fails verify: `user` comes from the older `hourly`, `arrow`
    still from `daily`; stderr names the copy passed over; nothing of it is left locally."""
    expected = _daily_then_hourly(layout)
    rotten = layout.backup("hourly", "hourly_20261207_030000", rotten=True)
    layout.wipe()

    result = layout.cli("restore", "--latest", "--from-offsite", "--force")
    assert result.returncode == 0, result.stderr
    assert f"warning: offsite copy {rotten} unusable" in result.stderr
    assert f"restored user from {HOURLY}" in result.stdout
    assert f"restored arrow from {DAILY}" in result.stdout
    assert layout.state() == expected
    assert not (layout.backups / "hourly_20261207_030000.tar.gz").exists()


def test_dry_run_shows_the_whole_plan_and_changes_nothing(layout: Layout) -> None:
    """`--dry-run` says which archive each database would come from and each archive's plan;
    the live databases stay as they are."""
    _daily_then_hourly(layout)
    _insert(layout.arrow, "still here after the dry run")
    before = layout.state()

    text = layout.cli("restore", "--latest", "--from-offsite", "--dry-run")
    assert text.returncode == 0, text.stderr
    assert f"  user from {HOURLY}" in text.stdout and f"  arrow from {DAILY}" in text.stdout
    assert f"{DAILY} verified; a restore would:" in text.stdout
    as_json = json.loads(layout.cli("restore", "--latest", "--from-offsite", "--dry-run",
                                    "--json").stdout)  # fmt: skip
    assert as_json["dry_run"] is True
    assert as_json["databases"] == {"user": HOURLY, "arrow": DAILY}
    assert as_json["pre_restore_archives"] == []
    assert layout.state() == before


def test_a_second_archive_failing_reports_what_was_restored_and_how_to_undo(
    layout: Layout,
) -> None:
    """`arrow` is busy (another holder has its lock) when its archive's turn comes: `user` was
    restored from `hourly`; the one error line and the --json error say so and name the
    pre_restore archive that undoes it; `arrow` is untouched."""
    expected = _daily_then_hourly(layout)
    _insert(layout.user, "undone by the restore")
    _insert(layout.arrow, "kept: busy")
    arrow_now = dump(layout.arrow)
    with archiver.database_locks(layout.backups, ["arrow"]):
        text = layout.cli("restore", "--latest", "--from-offsite", "--force")
        failed = layout.cli("restore", "--latest", "--from-offsite", "--force", "--json")
    assert text.returncode == 1, text.stderr
    (line,) = [ln for ln in text.stderr.splitlines() if ln.startswith("backup-sidecar: error:")]
    assert f"restore incomplete: restored user from {HOURLY}, then the restore of arrow " in line
    assert f"from {DAILY} failed" in line and "to undo, restore pre_restore_" in line
    assert failed.returncode == 1, failed.stderr
    error: dict[str, Any] = json.loads(failed.stdout)["error"]
    assert error["restored"] == ["user"]
    assert len(error["pre_restore_archives"]) == 1
    assert error["pre_restore_archive"] == error["pre_restore_archives"][0]
    assert dump(layout.user) == expected["user"] and dump(layout.arrow) == arrow_now


def test_the_socket_restores_every_database(
    daemons: DaemonRunner, tmp_path: Path, sock_dir: Path
) -> None:
    """A daemon backs up `daily` then `hourly` and uploads both; with the local archives gone
    and both databases changed, `restore` with "from": "offsite", "latest": true brings each
    back from the newest copy holding it; "databases": ["arrow"] restricts it."""
    data, backups = tmp_path / "data", tmp_path / "backups"
    user = make_db(data / "user_data.db", wal=True, rows=80, tag="user")
    arrow = make_db(data / "arrow_database.db", wal=False, rows=60, tag="arrow")
    backups.mkdir()
    url = f"file://{tmp_path / 'offsite'}"
    store = Store(parse_target(url), retry=fast_retry())
    config = quiet_config(backup_dir=backups, databases={"user": user, "arrow": arrow},
                          socket_path=sock_dir / "control.sock",
                          policies={**POLICIES, "pre_restore": {"keep": 10}},
                          offsite={"url": url})  # fmt: skip
    d = daemons.start(config)
    daily = str(d.request("backup", policy="daily")["archive"])
    arrow_daily = dump(arrow)
    _insert(user, "after daily")
    hourly = str(d.request("backup", policy="hourly")["archive"])
    user_hourly = dump(user)
    wait_until(
        lambda: (
            {f"{daily}.tar.gz", f"{hourly}.tar.gz"}
            <= {o.name for o in store.list().objects if o.confirmed}
        ),
        what="both backups confirmed offsite",
    )
    for name in (daily, hourly):
        (backups / f"{name}.tar.gz").unlink()
    _insert(user, "undone")
    _insert(arrow, "undone")

    latest: dict[str, Any] = {"from": "offsite", "latest": True, "confirm": True}
    result = d.request("restore", **latest)
    assert result["databases"] == {"user": hourly, "arrow": daily}
    assert len(result["pre_restore_archives"]) == 2
    assert dump(user) == user_hourly and dump(arrow) == arrow_daily
    assert integrity(user) == "ok" and integrity(arrow) == "ok"

    _insert(user, "kept")
    _insert(arrow, "undone again")
    user_now = dump(user)
    only = d.request("restore", databases=["arrow"], **latest)
    assert only["databases"] == {"arrow": daily} and only["archive"] == daily
    assert dump(arrow) == arrow_daily and dump(user) == user_now
