"""Restore-side faults (issue 5, faults 9-12), through the real CLI and the real daemon.

9.  kill -9 of the restoring process at many points, while another process holds the live
    database open: the live database is fully the old or fully the restored content, passes
    integrity_check, and the application's own connection goes on reading and writing;
    the leftovers are removed at the next daemon start and a retried restore succeeds.
10. A full disk in the backup directory (safety backup) and in the live database's directory
    (the restore's journal or WAL): refused or rolled back, the live database unchanged.
11. A restore while the application commits at a steady rate: completed within a bounded wait
    with exactly the archive's content (plus the application's later rows), or failed clearly
    with the old content intact; never a mix.
12. A WAL destination with another page size, asked through the daemon's socket: refused
    before any change.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backup_sidecar.control import ControlError
from support.archives import library_archive
from support.cli import cli_command, cli_env, one_error_line, run_cli
from support.daemon import DaemonRunner, quiet_config
from support.databases import (
    DIGEST_SQL,
    digest,
    integrity,
    journal_mode,
    make_content_db,
    make_ticked_db,
)
from support.files import fill, tree, tree_diff
from support.waiting import wait_until

#: Rows of ~4 KB: the live database is ~24 MB, the archive's ~28 MB (a CLI restore takes
#: one to two seconds here, with the write step itself a few hundred milliseconds).
OLD_ROWS, NEW_ROWS, BLOB = 6000, 7000, 4000
KILL_SEED = 20261128
#: Where each attempt's kill lands, cycled; "writing" (inside SQLite's write transaction) is
#: the interesting one and gets half of the attempts.
KILL_PHASES = ("writing", "extract", "writing", "safety", "writing", "published", "writing", "late")
KILLS_PER_MODE = 8

#: Figures for docs/reliability.md, printed at the end of each test (-s shows them).
FIGURES: dict[str, Any] = {}


@dataclass(frozen=True)
class KillScene:
    """Templates of the live database (old content) in both journal modes, the archive
    to restore (new content), and the digests of both contents."""

    root: Path
    templates: dict[str, Path]
    archive: Path
    old: tuple[int, float, str]
    new: tuple[int, float, str]


@pytest.fixture(scope="module")
def kill_scene(tmp_path_factory: pytest.TempPathFactory) -> KillScene:
    root = tmp_path_factory.mktemp("kill")
    source = make_content_db(
        root / "source" / "user_data.db", rows=NEW_ROWS, tag="new", wal=True, blob=BLOB
    )
    wal = make_content_db(
        root / "template-wal" / "user_data.db", rows=OLD_ROWS, tag="old", wal=True, blob=BLOB
    )
    rollback = root / "template-rollback" / "user_data.db"
    rollback.parent.mkdir()
    shutil.copyfile(wal, rollback)
    conn = sqlite3.connect(rollback)
    conn.execute("PRAGMA journal_mode=delete").fetchone()
    conn.close()
    templates = {"wal": wal, "rollback": rollback}
    store = root / "archive-store"
    store.mkdir()
    archive = library_archive(store, "target", user=source)
    old, new = digest(templates["wal"]), digest(source)
    assert old == digest(templates["rollback"])
    assert old != new
    return KillScene(root=root, templates=templates, archive=archive, old=old, new=new)


def _staged(
    backup_dir: Path, prefix: str, member: str | None = None, *, old: frozenset[str] = frozenset()
) -> bool:
    """Whether a NEW staging area (not one of ``old``) of this kind (holding ``member``) exists."""
    staging = backup_dir / ".staging"
    if not staging.is_dir():
        return False
    for area in staging.glob(f"{prefix}-*"):
        if area.name not in old and (member is None or (area / member).exists()):
            return True
    return False


def _pre_restores(backup_dir: Path) -> list[Path]:
    return sorted(backup_dir.glob("pre_restore_*.tar.gz"))


def _journal_or_outcome(daemon: Any, live: Path) -> bool:
    """True once the restore's rollback journal exists, or once the restore has already ended
    (a loaded machine can commit the short transaction between two polls: the kill then lands
    after it, which the test accepts); a failed restore fails the test with its reason."""
    if Path(f"{live}-journal").exists():
        return True
    failed = daemon.log.find("restore_failed")
    assert not failed, f"the restore failed before its transaction: {failed}"
    return bool(daemon.log.find("restore_completed"))


def _wal_size(live: Path) -> int:
    wal = Path(f"{live}-wal")
    return wal.stat().st_size if wal.exists() else 0


def _phase_reached(
    phase: str,
    *,
    mode: str,
    live: Path,
    backup_dir: Path,
    known_safety: int,
    wal_before: int,
    old: frozenset[str],
) -> Callable[[], bool]:
    """The observable sign that a restore reached ``phase``."""
    if phase == "extract":
        return lambda: _staged(backup_dir, "restore", "user_data.db", old=old)
    if phase == "safety":
        return lambda: _staged(backup_dir, "backup", old=old)
    if phase in ("published", "late"):
        return lambda: len(_pre_restores(backup_dir)) > known_safety
    if mode == "wal":  # writing: the restore's frames are arriving in the WAL
        return lambda: _wal_size(live) > wal_before + (256 << 10)
    return lambda: Path(f"{live}-journal").exists()  # writing: the rollback journal exists


def _run_until(proc: subprocess.Popen[str], reached: Callable[[], bool], timeout: float) -> bool:
    """Watch a running process until ``reached()``; False if it exited first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if reached():
            return True
        if time.monotonic() > deadline:
            raise AssertionError("the restore never reached the kill point")
        time.sleep(0.0005)  # poll interval of the observation, not a synchronisation
    return False


@dataclass
class KillAttempt:
    mode: str
    phase: str
    delay_ms: int
    killed: bool
    outcome: str
    hot_journal: bool
    wal_grew: bool
    left: frozenset[str]
    left_files: frozenset[tuple[str, int, int]]


def _staging_files(backup_dir: Path) -> frozenset[tuple[str, int, int]]:
    """Each entry of the staging directory as (name, inode, ctime): a run that removes a
    leftover and then claims the same name (two runs in one wall-clock second reserve the same
    ``pre_restore_<second>.name``) leaves a different file under that name."""
    found: set[tuple[str, int, int]] = set()
    for p in (backup_dir / ".staging").iterdir():
        st = p.lstat()
        found.add((p.name, st.st_ino, st.st_ctime_ns))
    return frozenset(found)


def _kill_attempt(
    *,
    scene: KillScene,
    mode: str,
    n: int,
    phase: str,
    rng: random.Random,
    backup_dir: Path,
    sql_session: Callable[..., Any],
    previous_left: frozenset[tuple[str, int, int]],
) -> KillAttempt:
    live_dir = scene.root / f"live-{mode}-{n}"
    live_dir.mkdir()
    live = live_dir / "user_data.db"
    shutil.copyfile(scene.templates[mode], live)
    app = sql_session(live, busy_timeout=30.0)
    assert tuple(app.execute(DIGEST_SQL)[0]) == (scene.old[0], scene.old[1], scene.old[2])
    env = cli_env(backup_dir, arrow=live_dir / "arrow_database.db", user=live)
    delay = {"late": rng.uniform(0.05, 0.8), "writing": rng.uniform(0.0, 0.15)}.get(
        phase, rng.uniform(0.0, 0.3)
    )
    known_safety = len(_pre_restores(backup_dir))
    wal_before = _wal_size(live)
    reached = _phase_reached(
        phase,
        mode=mode,
        live=live,
        backup_dir=backup_dir,
        known_safety=known_safety,
        wal_before=wal_before,
        old=frozenset(name for name, _, _ in previous_left),
    )
    proc = subprocess.Popen(
        cli_command("restore", "target", "--force", "--db", "user"),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed = False
    if _run_until(proc, reached, timeout=120):
        deadline = time.monotonic() + delay
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.0005)
        if proc.poll() is None:
            proc.kill()
            killed = True
    _, err = proc.communicate(timeout=120)
    if not killed:
        assert proc.returncode == 0, err
    left_files = _staging_files(backup_dir)
    left = frozenset(name for name, _, _ in left_files)
    assert not previous_left & left_files, "this run left what the killed one before it left"
    hot = Path(f"{live}-journal").exists() and Path(f"{live}-journal").stat().st_size > 0
    wal_grew = _wal_size(live) > wal_before

    # The application's connection, held open throughout, sees one whole state ...
    seen = tuple(app.execute(DIGEST_SQL)[0])
    assert seen in (scene.old, scene.new), f"{mode} {phase}: a mix: {seen}"
    # ... the file passes integrity_check and keeps its journal mode ...
    assert integrity(live) == "ok"
    assert journal_mode(live) == ("wal" if mode == "wal" else "delete")
    # ... and the application goes on writing and reading through the same connection.
    app.execute("INSERT INTO items(tag, chk, body) VALUES ('app', 1, x'00')")
    assert app.execute("SELECT count(*) FROM items WHERE tag = 'app'") == [[1]]
    assert app.execute("SELECT count(*) FROM items") == [[seen[0] + 1]]
    app.close()
    assert sorted(p.name for p in live_dir.iterdir() if not p.name.endswith(("-wal", "-shm"))) == [
        "user_data.db"
    ], "no temporary file beside the live database"
    return KillAttempt(
        mode=mode,
        phase=phase,
        delay_ms=round(delay * 1000),
        killed=killed,
        outcome="old" if seen == scene.old else "new",
        hot_journal=hot,
        wal_grew=wal_grew and seen == scene.old,
        left=left,
        left_files=left_files,
    )


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["rollback", "wal"])
def test_kill_9_during_restore_leaves_old_or_new_content(
    mode: str,
    kill_scene: KillScene,
    tmp_path: Path,
    sql_session: Callable[..., Any],
    daemons: DaemonRunner,
) -> None:
    """kill -9 of `restore --force` at many points (while the archive is staged, during the
    safety backup, inside SQLite's write transaction, after it) into a live database another
    process holds open: every time the live database is exactly the old or exactly the
    restored content, passes integrity_check, and the application's connection reads and
    writes on. Every pre_restore archive that was published verifies; the next daemon start
    removes every leftover staging area; a retried CLI restore then succeeds."""
    rng = random.Random(f"{KILL_SEED}-{mode}")
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    (backup_dir / "target.tar.gz").hardlink_to(kill_scene.archive)
    attempts: list[KillAttempt] = []
    for n in range(KILLS_PER_MODE):
        attempts.append(
            _kill_attempt(
                scene=kill_scene,
                mode=mode,
                n=n,
                phase=KILL_PHASES[n % len(KILL_PHASES)],
                rng=rng,
                backup_dir=backup_dir,
                sql_session=sql_session,
                previous_left=attempts[-1].left_files if attempts else frozenset(),
            )
        )
    killed = [a for a in attempts if a.killed]
    in_transaction = [a for a in killed if (a.hot_journal if mode == "rollback" else a.wal_grew)]
    FIGURES[f"kill_{mode}"] = attempts
    print(f"\nkill -9 during restore ({mode}):")
    for a in attempts:
        print(
            f"  {a.phase:<9} +{a.delay_ms:>3} ms killed={a.killed!s:<5} -> {a.outcome} "
            f"(hot journal: {a.hot_journal}, uncommitted WAL frames: {a.wal_grew})"
        )
    assert len(killed) >= KILLS_PER_MODE // 2, "most attempts must be killed mid-restore"
    assert in_transaction, "at least one kill must land inside SQLite's write transaction"

    # Killed restores leave staging areas; the next run removed them (checked in each
    # attempt); the next daemon start removes what the last one left.
    assert any(a.left for a in killed), "killed restores leave staging areas behind"
    last_left = attempts[-1].left
    daemon = daemons.start(
        quiet_config(
            backup_dir=backup_dir,
            databases={"user": kill_scene.root / f"live-{mode}-0" / "user_data.db"},
            socket_path=tmp_path / "c.sock",
        )
    )
    removed = {Path(e["path"]).name for e in daemon.log.find("leftover_removed")}
    assert removed == set(last_left)
    assert list((backup_dir / ".staging").iterdir()) == []
    for safety in _pre_restores(backup_dir):
        name = safety.name.removesuffix(".tar.gz")
        assert daemon.request("verify", archive=name)["ok"] is True
    daemon.stop()
    print(
        f"  staging areas left by kills: {sum(len(a.left) for a in attempts)}, each removed "
        f"by the next CLI run or daemon start"
    )

    # The operator retries: the CLI restore completes into a database that saw a kill.
    live = kill_scene.root / f"live-{mode}-0" / "user_data.db"
    env = cli_env(backup_dir, user=live)
    result = run_cli("restore", "target", "--force", "--db", "user", env=env)
    assert result.returncode == 0, result.stderr
    assert digest(live) == kill_scene.new
    assert integrity(live) == "ok"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["rollback", "wal"])
def test_kill_9_of_the_daemon_inside_the_restore_transaction(
    mode: str,
    kill_scene: KillScene,
    tmp_path: Path,
    sql_session: Callable[..., Any],
    daemons: DaemonRunner,
) -> None:
    """kill -9 of the DAEMON while it restores (asked over its socket) inside SQLite's write
    transaction: the live database is the old content, intact, and the application's
    connection works; the restarted daemon removes the leftovers and the same restore through
    its socket then succeeds."""
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    (backup_dir / "target.tar.gz").hardlink_to(kill_scene.archive)
    live = tmp_path / "live" / "user_data.db"
    live.parent.mkdir()
    shutil.copyfile(kill_scene.templates[mode], live)
    app = sql_session(live, busy_timeout=30.0)
    app.execute("SELECT count(*) FROM items")
    cfg = quiet_config(
        backup_dir=backup_dir, databases={"user": live}, socket_path=tmp_path / "c.sock"
    )
    daemon = daemons.start(cfg)
    wal_before = _wal_size(live)

    def ask() -> None:  # the daemon dies mid-answer: the connection just ends
        with contextlib.suppress(OSError, AssertionError, ControlError, ValueError):
            daemon.request("restore", archive="target", confirm=True)

    client = threading.Thread(target=ask, daemon=True)
    client.start()
    if mode == "wal":
        wait_until(lambda: _wal_size(live) > wal_before + (256 << 10), what="WAL frames")
    else:
        wait_until(
            lambda: _journal_or_outcome(daemon, live), what="a rollback journal (or the outcome)"
        )
    daemon.proc.kill()
    daemon.proc.wait()
    client.join(timeout=30)
    hot = Path(f"{live}-journal").exists()
    # On a fast machine the restore may have committed and cleaned up before the kill landed.
    left_behind = any((backup_dir / ".staging").iterdir())

    assert tuple(app.execute(DIGEST_SQL)[0]) in (kill_scene.old, kill_scene.new)
    outcome = "old" if tuple(app.execute(DIGEST_SQL)[0]) == kill_scene.old else "new"
    assert integrity(live) == "ok"
    app.execute("INSERT INTO items(tag, chk, body) VALUES ('app', 1, x'00')")
    app.close()
    FIGURES[f"daemon_kill_{mode}"] = {"outcome": outcome, "hot_journal": hot}
    print(f"\ndaemon kill -9 inside the restore ({mode}): {outcome} content, hot journal {hot}")

    again = daemons.start(cfg)
    if left_behind:
        assert again.log.find("leftover_removed"), "the killed restore's staging area is removed"
    assert list((backup_dir / ".staging").iterdir()) == []
    result = again.request("restore", archive="target", confirm=True)
    assert result["restored"] == ["user"]
    count, total, _ = digest(live)
    assert (count, total) == kill_scene.new[:2]
    assert integrity(live) == "ok"


# --- 10. disk full ----------------------------------------------------------------------------


@dataclass
class SpaceScene:
    live_dir: Path
    live: Path
    backup_dir: Path
    env: dict[str, str]
    before: bytes
    old: tuple[int, float, str]

    def assert_unchanged(self) -> None:
        assert digest(self.live) == self.old
        assert integrity(self.live) == "ok"
        assert _pre_restores(self.backup_dir) == []
        staging = self.backup_dir / ".staging"
        assert not staging.exists() or list(staging.iterdir()) == []


def _space_scene(
    root: Path, *, live_dir: Path, backup_dir: Path, wal: bool, old_rows: int, new_rows: int
) -> SpaceScene:
    source = make_content_db(
        root / "source" / "user_data.db", rows=new_rows, tag="new", wal=False, blob=BLOB
    )
    live = make_content_db(live_dir / "user_data.db", rows=old_rows, tag="old", wal=wal, blob=BLOB)
    library_archive(backup_dir, "target", user=source)
    env = cli_env(backup_dir, arrow=live_dir / "arrow_database.db", user=live)
    return SpaceScene(live_dir, live, backup_dir, env, live.read_bytes(), digest(live))


def test_safety_backup_that_cannot_fit_is_refused_before_any_change(
    tmpfs: Callable[..., Path], tmp_path: Path
) -> None:
    """A backup directory (tmpfs) with room for the archive's staged copy but not for the
    pre-restore safety backup of an 8 MB live database: exit 1 naming the free space and the
    safety backup; the live file is byte-identical and no pre_restore archive exists."""
    backup_dir = tmpfs("backups", size="20m")
    scene = _space_scene(
        tmp_path,
        live_dir=tmp_path / "live",
        backup_dir=backup_dir,
        wal=True,
        old_rows=2000,
        new_rows=10,
    )
    result = run_cli("restore", "target", "--force", env=scene.env)
    assert result.returncode == 1, result.stderr
    line = one_error_line(result)
    assert "not enough free space" in line and "safety backup" in line, line
    assert scene.live.read_bytes() == scene.before
    scene.assert_unchanged()


def _fill_when(condition: Callable[[], bool], directory: Path, *, leave: int) -> threading.Thread:
    """Fill ``directory``'s filesystem as soon as ``condition()`` holds (a disk filling up
    while the restore runs, past its free-space pre-check)."""

    def run() -> None:
        deadline = time.monotonic() + 60
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.0005)  # a tight poll: the moment matters, not a synchronisation
        fill(directory, leave=leave)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _saving_started(backup_dir: Path) -> bool:
    """Whether the restore has made its directory for the content it replaces."""
    rescue = backup_dir / ".rescue"
    return rescue.is_dir() and any(rescue.iterdir())


def test_disk_filling_up_while_the_replaced_content_is_saved_loses_nothing(
    tmpfs: Callable[..., Path], tmp_path: Path
) -> None:
    """The backup directory's filesystem fills up (after the free-space pre-check passed) just
    as the restore starts saving the content it replaces. Wherever the disk runs out, exit 1
    with one line naming the full disk, and nothing is lost: either the save failed inside the
    restore's write transaction, which rolled back (live database byte-identical, nothing
    left in .rescue or .staging, no pre_restore archive); or the restore had committed and
    the safety archive could not be written, and the line names the directory that holds the
    replaced content, which is exactly the old database."""
    backup_dir = tmpfs("backups", size="96m")
    scene = _space_scene(
        tmp_path,
        live_dir=tmp_path / "live",
        backup_dir=backup_dir,
        wal=False,
        old_rows=4000,
        new_rows=10,
    )
    filler = _fill_when(lambda: _saving_started(backup_dir), backup_dir, leave=64 << 10)
    result = run_cli("restore", "target", "--force", env=scene.env)
    filler.join(timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    line = one_error_line(result)
    assert "No space left" in line or "disk is full" in line or "free space" in line, line
    if "restore incomplete" in line:
        assert digest(scene.live)[2] == "new" and integrity(scene.live) == "ok"
        kept = Path(line.rsplit(" kept in ", 1)[1])
        assert kept.parent == backup_dir / ".rescue", line
        assert digest(kept / "user_data.db") == scene.old
        (backup_dir / "filler").unlink()
        listed = run_cli("list", "--json", env=scene.env)
        assert all(
            a["status"] != "verified"
            for a in json.loads(listed.stdout)
            if a["policy"] == "pre_restore"
        )
        FIGURES["enospc_safety"] = f"committed, content kept: {line}"
        return
    assert scene.live.read_bytes() == scene.before
    (backup_dir / "filler").unlink()
    scene.assert_unchanged()
    assert not (backup_dir / ".rescue").exists()
    FIGURES["enospc_safety"] = f"rolled back: {line}"


def test_live_directory_too_small_for_the_restore_is_refused(
    tmpfs: Callable[..., Path], tmp_path: Path
) -> None:
    """The live database sits on a 5 MB tmpfs that cannot hold the restore's journal: the
    free-space pre-check refuses it (exit 1 naming the directory), nothing changed."""
    live_dir = tmpfs("live", size="5m")
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    scene = _space_scene(
        tmp_path, live_dir=live_dir, backup_dir=backup_dir, wal=True, old_rows=200, new_rows=600
    )
    result = run_cli("restore", "target", "--force", env=scene.env)
    assert result.returncode == 1, result.stderr
    line = one_error_line(result)
    assert "not enough free space" in line and str(live_dir) in line, line
    assert scene.live.read_bytes() == scene.before
    scene.assert_unchanged()


@pytest.mark.parametrize(
    ("wal", "leave"),
    [(False, 0), (False, 600 << 10), (True, 0), (True, 600 << 10)],
    ids=["rollback-no-room", "rollback-room-for-journal-only", "wal-no-room", "wal-some-room"],
)
def test_disk_filling_up_under_the_restore_write_rolls_back(
    wal: bool,
    leave: int,
    tmpfs: Callable[..., Path],
    tmp_path: Path,
    sql_session: Callable[..., Any],
) -> None:
    """The live database's filesystem fills up after the pre-checks, while the restore waits
    for the application's write lock, so SQLite's write of the restore hits ENOSPC (journal,
    WAL or the growing database file): the restore exits 1 saying it was rolled back, the live
    database holds exactly the old content and passes integrity_check, the application's open
    connection reads it (and writes again once space is freed), and neither a pre_restore
    archive nor saved content is left."""
    live_dir = tmpfs("live", size="24m")
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    scene = _space_scene(
        tmp_path, live_dir=live_dir, backup_dir=backup_dir, wal=wal, old_rows=400, new_rows=900
    )
    app = sql_session(scene.live, busy_timeout=10.0)
    assert tuple(app.execute(DIGEST_SQL)[0]) == scene.old
    app.execute("BEGIN IMMEDIATE")  # the restore waits for this lock...
    proc = subprocess.Popen(
        cli_command("restore", "target", "--force"),
        env=scene.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: _saving_started(backup_dir), what="the restore's write")
    fill(live_dir, leave=leave)  # ...while the disk fills up
    app.execute("ROLLBACK")
    out, err = proc.communicate(timeout=120)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert (live_dir / "filler").exists()
    assert result.returncode == 1, result.stdout + result.stderr
    line = one_error_line(result)
    assert "rolled back" in line and ("full" in line or "space" in line), line
    assert tuple(app.execute(DIGEST_SQL)[0]) == scene.old
    assert integrity(scene.live) == "ok"
    (live_dir / "filler").unlink()
    app.execute("INSERT INTO items(tag, chk, body) VALUES ('old', 0, x'00')")
    app.close()
    assert digest(scene.live)[0] == scene.old[0] + 1
    assert journal_mode(scene.live) == ("wal" if wal else "delete")
    assert _pre_restores(backup_dir) == [] and not (backup_dir / ".rescue").exists()
    FIGURES[f"enospc_write_{'wal' if wal else 'rollback'}_{leave}"] = line


# --- 11. a writer during the restore ------------------------------------------------------------

ARCHIVE_TICKS = 500
WRITER_RATE = 200.0


def _ticks(db: Path) -> list[tuple[int, float]]:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return [(int(n), float(at)) for n, at in conn.execute("SELECT n, at FROM ticks")]
    finally:
        conn.close()


def _items_digest(db: Path) -> tuple[int, float, str]:
    return digest(db)


@pytest.mark.slow
@pytest.mark.parametrize("wal", [False, True], ids=["rollback", "wal"])
def test_restore_under_a_steady_writer_is_whole_or_refused(
    wal: bool, tmp_path: Path, writer_process: Callable[..., Any]
) -> None:
    """While the application commits 200 rows/s, `restore --force` either completes within
    its lock timeout plus a margin (exit 0) and the database then holds exactly the archive's
    items and every archive ``ticks`` row unchanged, with every other ``ticks`` row committed
    after the restore began; or it fails with exit 1 naming the lock and the old content is
    intact. The writer never sees an error and keeps committing afterwards."""
    source = make_ticked_db(
        tmp_path / "source" / "user_data.db", rows=3000, blob=BLOB, ticks=ARCHIVE_TICKS
    )
    archived_ticks = _ticks(source)
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    library_archive(backup_dir, "target", user=source)
    live = make_content_db(
        tmp_path / "live" / "user_data.db", rows=3000, tag="old", wal=wal, blob=BLOB
    )
    old_items = digest(live)
    writer = writer_process(live, rate=WRITER_RATE)
    wait_until(lambda: writer.committed() >= 50, what="the writer's first rows")
    env = cli_env(backup_dir, user=live, SIDECAR_LOCK_TIMEOUT="20s")
    started_wall = time.time()
    started = time.monotonic()
    result = run_cli("restore", "target", "--force", "--db", "user", env=env, timeout=120)
    took = time.monotonic() - started
    after_restore = writer.committed()
    wait_until(lambda: writer.committed() >= after_restore + 50, what="the writer going on")
    out, err = writer.proc.communicate(timeout=60)  # closing stdin is the writer's stop signal
    report = json.loads(out)
    assert report["errors"] == 0, err
    assert took < 20 + 15, f"the restore took {took:.1f}s"

    ticks = _ticks(live)
    if result.returncode == 0:
        assert _items_digest(live)[:2] == digest(source)[:2]
        assert _items_digest(live)[2] == "archived"
        by_n = dict(ticks)
        for n, at in archived_ticks:
            assert by_n.get(n) == at, f"archive row {n} missing or changed"
        extra = [(n, at) for n, at in ticks if (n, at) not in set(archived_ticks)]
        assert extra, "the writer's rows after the restore are there"
        assert all(at > started_wall for _, at in extra), "a row from before the restore survived"
        outcome = f"restored in {took:.2f}s; {len(extra)} writer rows after it"
    else:
        assert result.returncode == 1, result.stderr
        assert "locked" in one_error_line(result)
        assert _items_digest(live) == old_items
        assert all(at > 1e9 for _, at in ticks), "no archive row leaked into the old content"
        outcome = f"refused after {took:.2f}s: locked"
    assert integrity(live) == "ok"
    assert journal_mode(live) == ("wal" if wal else "delete")
    FIGURES[f"writer_{'wal' if wal else 'rollback'}"] = {
        "outcome": outcome,
        "writer_commits": report["commits"],
        "writer_max_latency_s": round(report["max_latency_s"], 3),
    }
    print(
        f"\nrestore under a {WRITER_RATE:g}/s writer ({'wal' if wal else 'rollback'}): "
        f"{outcome}; writer max latency {report['max_latency_s']:.3f}s, errors 0"
    )


# --- 12. page size ------------------------------------------------------------------------------


def test_wal_page_size_mismatch_is_refused_through_the_socket(
    tmp_path: Path, daemons: DaemonRunner
) -> None:
    """A restore asked over the daemon's socket into a WAL database whose page size differs
    from the archive's copy is answered ``refused`` naming the page sizes, for the real
    request and for a dry run; the live file (and its -wal) are byte-identical and no
    pre_restore archive or staging area is left."""
    source = make_content_db(
        tmp_path / "source" / "user_data.db", rows=50, tag="new", wal=False, page_size=8192
    )
    live = make_content_db(
        tmp_path / "live" / "user_data.db", rows=80, tag="old", wal=True, page_size=4096
    )
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    library_archive(backup_dir, "big_pages", user=source)
    daemon = daemons.start(
        quiet_config(
            backup_dir=backup_dir, databases={"user": live}, socket_path=tmp_path / "c.sock"
        )
    )
    before = tree(live.parent)
    for fields in ({"confirm": True}, {"dry_run": True}):
        with pytest.raises(ControlError) as err:
            daemon.request("restore", archive="big_pages", **fields)
        assert err.value.code == "refused", err.value
        assert "page size 4096" in err.value.message and "8192" in err.value.message
    assert tree_diff(before, tree(live.parent)) == {}
    assert _pre_restores(backup_dir) == []
    assert list((backup_dir / ".staging").iterdir()) == []
    assert daemon.ping()["pong"] is True
