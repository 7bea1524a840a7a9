"""A restore loses nothing (issue 12, items 2, 3 and 9), through the real CLI and the daemon.

3.  While the application commits 200 transactions/s, every commit it saw succeed is either in
    the ``pre_restore`` archive (committed before the restore's write) or in the live database
    (after it): not one is in neither. WAL and rollback journal, CLI and control socket.
2.  A damaged live database (failing integrity_check, or an empty file) is saved as it is and
    restored over; a dry run says so first. A dangling symbolic link or a file that is not
    SQLite at all is refused with one line naming it.
9.  A restore of two databases, one of which stays locked, changes neither (all locks are
    taken before any write); ``--json`` prints the error object.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from support.archives import library_archive
from support.cli import cli_env, one_error_line, run_cli
from support.daemon import DaemonRunner, quiet_config
from support.databases import digest, integrity, journal_mode, make_content_db, make_ticked_db
from support.files import tree, tree_diff
from support.waiting import wait_until

SEQ_BASE = 10_000_000_000.0  # tests/support/writer.py: a logged commit k writes at = SEQ_BASE + k
WRITER_RATE = 200.0
ARCHIVE_TICKS = 300


def _seqs(db: Path) -> set[int]:
    """The writer's logged commits found in ``db``'s ``ticks``."""
    conn = sqlite3.connect(db, timeout=30)
    try:
        rows = conn.execute("SELECT at FROM ticks WHERE at >= ?", (SEQ_BASE,)).fetchall()
    finally:
        conn.close()
    return {round(at - SEQ_BASE) for (at,) in rows}


def _pre_restores(backup_dir: Path) -> list[Path]:
    return sorted(backup_dir.glob("pre_restore_*.tar.gz"))


def _member(archive: Path, member: str, dest: Path) -> Path:
    """One member of an archive, extracted by GNU tar."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(dest), member], check=True)
    return dest / member


def _listed(backup_dir: Path, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    result = run_cli("list", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return {a["name"]: a for a in json.loads(result.stdout)}


# --- 3. no commit lost ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("via", ["cli", "socket"])
@pytest.mark.parametrize("wal", [False, True], ids=["rollback", "wal"])
def test_every_commit_is_in_the_safety_archive_or_the_restored_database(
    wal: bool,
    via: str,
    tmp_path: Path,
    writer_process: Callable[..., Any],
    daemons: DaemonRunner,
) -> None:
    """A writer commits 200 transactions/s and logs each commit once COMMIT returned; a restore
    runs meanwhile (CLI or control socket). Afterwards the logged commits split exactly: 1..k
    are in the pre_restore archive, k+1..n in the live database, none in neither (today's code
    lost the commits made while its safety backup ran). The live database holds the archive's
    content plus commits k+1..n, keeps its journal mode, and the writer never saw an error."""
    source = make_ticked_db(
        tmp_path / "source" / "user_data.db", rows=2000, blob=500, ticks=ARCHIVE_TICKS
    )
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    library_archive(backup_dir, "target", user=source)
    live = make_content_db(tmp_path / "live" / "user_data.db", rows=2000, tag="old", wal=wal)
    seq_log = tmp_path / "commits.log"
    writer = writer_process(live, rate=WRITER_RATE, seq_log=seq_log)
    wait_until(lambda: writer.committed() >= 100, what="the writer's first commits")
    env = cli_env(backup_dir, user=live)
    if via == "cli":
        result = run_cli("restore", "target", "--force", "--db", "user", "--json", env=env)
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
    else:
        daemon = daemons.start(
            quiet_config(
                backup_dir=backup_dir, databases={"user": live}, socket_path=tmp_path / "c.sock"
            )
        )
        answer = daemon.request("restore", archive="target", databases=["user"], confirm=True)
    assert answer["restored"] == ["user"]
    after = writer.committed()
    wait_until(lambda: writer.committed() >= after + 100, what="the writer going on")
    report = writer.stop()
    assert report["errors"] == 0

    logged = {int(line) for line in seq_log.read_text().split()}
    assert logged == set(range(1, len(logged) + 1))
    (safety,) = _pre_restores(backup_dir)
    assert safety.name == f"{answer['pre_restore_archive']}.tar.gz"
    before = _seqs(_member(safety, "user_data.db", tmp_path / "saved"))
    now_live = _seqs(live)
    lost = logged - before - now_live
    assert not lost, f"{len(lost)} commits lost: {sorted(lost)[:10]}..."
    assert before and now_live, "the restore ran while the writer committed"
    k = max(before)
    assert before == set(range(1, k + 1)), "the safety archive is one committed state"
    assert now_live == set(range(k + 1, len(logged) + 1)), "the restore replaced exactly 1..k"
    count, total, tags = digest(live)
    assert (count, total) == digest(source)[:2] and tags == "archived"
    assert integrity(live) == "ok"
    assert journal_mode(live) == ("wal" if wal else "delete")
    print(
        f"\n{via} restore under a {WRITER_RATE:g}/s writer ({'wal' if wal else 'rollback'}): "
        f"{k} commits saved, {len(now_live)} after, 0 lost; writer max latency "
        f"{report['max_latency_s']:.3f}s"
    )


# --- 2. disaster recovery ---------------------------------------------------------------------


def _corrupt(db: Path) -> None:
    """Zero the root page of ``items``' index: integrity_check fails, the file stays SQLite."""
    conn = sqlite3.connect(db)
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'items_chk'").fetchone()
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with db.open("r+b") as f:
        f.seek((root[0] - 1) * page_size)
        f.write(b"\0" * page_size)
    assert _check(db) != "ok"


def _check(db: Path) -> str:
    """integrity_check's result, or the error SQLite gives instead of one."""
    try:
        return integrity(db)
    except sqlite3.DatabaseError as exc:
        return str(exc)


def _good_archive(tmp_path: Path, *, rows: int, blob: int = 64) -> tuple[Path, Path]:
    """A source database of ``rows`` new rows (rollback journal) and the backup directory
    holding its archive `good`."""
    source = make_content_db(
        tmp_path / "source" / "user_data.db", rows=rows, tag="new", wal=False, blob=blob
    )
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    library_archive(backup_dir, "good", user=source)
    return source, backup_dir


@pytest.mark.parametrize("wal", [False, True], ids=["rollback", "wal"])
def test_a_corrupt_live_database_is_saved_as_it_is_and_restored_over(
    wal: bool, tmp_path: Path
) -> None:
    """Disaster recovery: the live database fails integrity_check. The dry run says so and that
    it will be saved as it is; the restore exits 0, the live database then holds the archive's
    content and passes integrity_check, and the pre_restore archive is listed ``damaged`` with
    the integrity_check result, holding (rollback journal: byte for byte) the corrupt file.
    Today's code refused: its safety backup aborted on the failed check."""
    source, backup_dir = _good_archive(tmp_path, rows=300, blob=4000)
    live = make_content_db(tmp_path / "live" / "user_data.db", rows=500, tag="old", wal=wal)
    _corrupt(live)
    corrupt_bytes = live.read_bytes()
    env = cli_env(backup_dir, user=live)

    dry = run_cli("restore", "good", "--db", "user", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "fails integrity_check" in dry.stdout and "saved as it is" in dry.stdout
    assert live.read_bytes() == corrupt_bytes and _pre_restores(backup_dir) == []

    result = run_cli("restore", "good", "--db", "user", "--force", "--json", env=env)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["restored"] == ["user"]
    assert answer["damaged"] and "integrity_check" in answer["damaged"][0]
    assert digest(live) == digest(source) and integrity(live) == "ok"
    assert journal_mode(live) == ("wal" if wal else "delete")

    listed = _listed(backup_dir, env)[answer["pre_restore_archive"]]
    assert listed["status"] == "damaged", listed
    assert "integrity_check" in listed["error"] or "damaged" in listed["error"], listed
    (safety,) = _pre_restores(backup_dir)
    saved = _member(safety, "user_data.db", tmp_path / "saved")
    if not wal:
        assert saved.read_bytes() == corrupt_bytes
    assert _check(saved) != "ok"
    assert not (backup_dir / ".rescue").exists(), "emptied and removed"


def test_an_empty_live_file_is_restored_over_with_nothing_to_save(tmp_path: Path) -> None:
    """A zero-byte live file (SQLite reads it as an empty database) is written over: exit 0, the
    archive's content, and no pre_restore archive since there was nothing to save; the dry run
    says so. Today's code refused ("is empty (0 bytes)")."""
    source, backup_dir = _good_archive(tmp_path, rows=50)
    live = tmp_path / "live" / "user_data.db"
    live.parent.mkdir()
    live.touch()
    env = cli_env(backup_dir, user=live)
    dry = run_cli("restore", "good", "--db", "user", "--dry-run", env=env)
    assert dry.returncode == 0 and "nothing to save" in dry.stdout, dry.stdout + dry.stderr
    result = run_cli("restore", "good", "--db", "user", "--force", env=env)
    assert result.returncode == 0, result.stderr
    assert digest(live) == digest(source) and integrity(live) == "ok"
    assert _pre_restores(backup_dir) == []


def test_a_dangling_symlink_or_a_foreign_file_is_refused_naming_it(tmp_path: Path) -> None:
    """A live path that is a symbolic link to nothing is refused, dry run and real, with one
    line naming the link and its target; nothing is created at the target. A file that is not
    SQLite at all, or whose header SQLite refuses, is refused too, saying how to go on; it is
    left byte for byte."""
    source, backup_dir = _good_archive(tmp_path, rows=50)
    live = tmp_path / "live" / "user_data.db"
    live.parent.mkdir()
    target = tmp_path / "gone" / "real.db"
    live.symlink_to(target)
    env = cli_env(backup_dir, user=live)
    for flag in ("--dry-run", "--force"):
        result = run_cli("restore", "good", "--db", "user", flag, env=env)
        assert result.returncode == 1, result.stderr
        line = one_error_line(result)
        assert str(live) in line and str(target) in line and "dangling" in line
    assert not target.exists() and not target.parent.exists()
    live.unlink()
    live.write_bytes(b"not a database at all\n" * 100)
    before = tree(live.parent)
    result = run_cli("restore", "good", "--db", "user", "--force", env=env)
    assert result.returncode == 1
    line = one_error_line(result)
    assert str(live) in line and "not an SQLite database" in line and "move it aside" in line
    assert tree_diff(before, tree(live.parent)) == {}
    # The SQLite magic but a header SQLite refuses (page size 3): the same, dry run included.
    live.write_bytes(source.read_bytes()[:16] + b"\x00\x03" + source.read_bytes()[18:])
    before = tree(live.parent)
    for flag in ("--dry-run", "--force"):
        result = run_cli("restore", "good", "--db", "user", flag, env=env)
        assert result.returncode == 1
        line = one_error_line(result)
        assert "SQLite cannot open it" in line and "move it aside" in line, line
    assert tree_diff(before, tree(live.parent)) == {}
    assert _pre_restores(backup_dir) == []


def test_a_truncated_or_fifo_live_path_is_refused_alike_by_the_dry_run_and_the_real_run(
    tmp_path: Path,
) -> None:
    """A live database cut short (SQLite reads it as malformed and cannot write into it) and a
    FIFO at the live path: the dry run fails exactly as the real run does, one line saying why
    and how to go on, and nothing changes. (The dry run promised to save and replace the cut
    file while the real run failed; on a FIFO the real run hung forever.)"""
    source, backup_dir = _good_archive(tmp_path, rows=300, blob=4000)
    live = tmp_path / "live" / "user_data.db"
    live.parent.mkdir()
    live.write_bytes(source.read_bytes()[:40000])
    env = cli_env(backup_dir, user=live)
    before = tree(live.parent)
    for flag in ("--dry-run", "--force"):
        result = run_cli("restore", "good", "--db", "user", flag, env=env)
        assert result.returncode == 1, (flag, result.stdout)
        line = one_error_line(result)
        assert str(live) in line and "malformed" in line and "move it aside" in line, line
    assert tree_diff(before, tree(live.parent)) == {}
    assert _pre_restores(backup_dir) == []
    live.unlink()
    os.mkfifo(live)
    for flag in ("--dry-run", "--force"):
        result = run_cli("restore", "good", "--db", "user", flag, env=env, timeout=60)
        assert result.returncode == 1, (flag, result.stdout)
        line = one_error_line(result)
        assert str(live) in line and "not a regular file (a FIFO)" in line, line
    assert stat.S_ISFIFO(live.lstat().st_mode)


# --- 9. all or none ----------------------------------------------------------------------------


def _shm(rel: str) -> bool:
    """A WAL index changes when any connection reads: not content."""
    return rel.endswith("-shm")


def test_two_databases_one_locked_changes_neither(
    tmp_path: Path, sql_session: Callable[..., Any]
) -> None:
    """A restore of arrow and user while another process holds user's write lock past the lock
    timeout fails with one line naming user, and arrow is NOT replaced (every lock is taken
    before any write): both live files unchanged, no pre_restore archive, nothing left in the
    rescue or staging directories. ``--json`` prints the error object with ``restored: []``.
    Today's code replaced arrow, then failed on user, and printed nothing with --json."""
    src = tmp_path / "source"
    archive_arrow = make_content_db(src / "arrow_database.db", rows=40, tag="new", wal=False)
    archive_user = make_content_db(src / "user_data.db", rows=60, tag="new", wal=False)
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    library_archive(backup_dir, "both", arrow=archive_arrow, user=archive_user)
    live_dir = tmp_path / "live"
    arrow = make_content_db(live_dir / "arrow_database.db", rows=70, tag="old", wal=False)
    user = make_content_db(live_dir / "user_data.db", rows=80, tag="old", wal=True)
    holder = sql_session(user)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO items(tag, chk, body) VALUES ('held', 0, x'00')")
    before = tree(live_dir, ignore=_shm)
    env = cli_env(backup_dir, arrow=arrow, user=user, SIDECAR_LOCK_TIMEOUT="2s")
    started = time.monotonic()
    result = run_cli("restore", "both", "--force", "--json", env=env)
    assert result.returncode == 1, result.stderr
    line = one_error_line(result)
    assert "'user'" in line and "locked" in line
    assert time.monotonic() - started < 60
    holder.execute("ROLLBACK")
    assert digest(arrow)[2] == "old" and digest(user)[2] == "old"
    assert tree_diff(before, tree(live_dir, ignore=_shm)) == {}
    answer = json.loads(result.stdout)
    assert answer["ok"] is False and "locked" in answer["error"]["message"]
    assert "restored" not in answer["error"], "nothing was restored"
    assert _pre_restores(backup_dir) == []
    assert not (backup_dir / ".rescue").exists(), "emptied and removed"
    # Once the lock is gone, the same restore replaces both.
    result = run_cli("restore", "both", "--force", env=env)
    assert result.returncode == 0, result.stderr
    assert digest(arrow) == digest(archive_arrow) and digest(user) == digest(archive_user)
    shutil.rmtree(tmp_path / "source")
