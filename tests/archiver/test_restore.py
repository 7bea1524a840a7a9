"""Restores into live databases through the real CLI: round trips, open connections, refusals.

Real SQLite files (the two real ArrowTuner fixtures among them), real processes holding
connections, GNU tar to look inside archives.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict

import pytest

from backup_sidecar.archiver import ArchiveInfo, DatabaseSpec, list_archives
from backup_sidecar.archiver.prerestore import new_rescue_dir, remove_rescue
from support.archives import gnu_tar_extract, library_archive
from support.cli import Sidecar, is_log_record, one_error_line
from support.databases import SqlSession, integrity, journal_mode, make_db, read_only_dump

METADATA = "backup_metadata.json"


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def _backup(sidecar: Sidecar, name: str, *args: str) -> Path:
    out = _ok(sidecar.run("backup", "--name", name, *args)).stdout.strip().splitlines()
    path = Path(out[-1])
    assert path == sidecar.backup_dir / f"{name}.tar.gz"
    return path


def _archives(backup_dir: Path) -> set[str]:
    return {p.name for p in backup_dir.glob("*.tar.gz")}


def _pre_restore(sidecar: Sidecar) -> list[ArchiveInfo]:
    return [a for a in list_archives(sidecar.backup_dir) if a.policy == "pre_restore"]


# --- round trips of the real fixtures ---------------------------------------------------------


@pytest.mark.parametrize(("source_day", "live_day"), [("13", "14"), ("14", "13")])
def test_real_fixture_round_trip_into_a_live_database(
    source_day: str,
    live_day: str,
    fixtures_dir: Path,
    sidecar_env: Callable[..., Sidecar],
    tmp_path: Path,
) -> None:
    """Back up one real ArrowTuner arrow database, verify it, and restore it with --force into a
    live database holding the other day's content: afterwards the live database dumps exactly
    like the source, passes integrity_check, and the pre_restore archive holds the old content."""
    source = tmp_path / "source" / "arrow_database.db"
    live = tmp_path / "live" / "arrow_database.db"
    for path, day in ((source, source_day), (live, live_day)):
        path.parent.mkdir()
        shutil.copyfile(fixtures_dir / f"arrow_database_2025-08-{day}.db", path)
    expected = read_only_dump(source)
    old = read_only_dump(live)
    assert expected != old

    archive = _backup(sidecar_env(arrow=source), f"arrow_{source_day}", "--arrow-db-only")
    sidecar = sidecar_env(arrow=live)
    verified = _ok(sidecar.run("verify", archive.name))
    assert f"arrow_{source_day}: ok" in verified.stdout
    _ok(sidecar.run("restore", f"arrow_{source_day}", "--force"))

    assert read_only_dump(live) == expected
    assert integrity(live) == "ok"
    (safety,) = _pre_restore(sidecar)
    assert safety.databases == ("arrow",)
    out = gnu_tar_extract(safety.path, tmp_path / "safety")
    assert read_only_dump(out / "arrow_database.db") == old


# --- live restores under open connections -----------------------------------------------------


@pytest.mark.parametrize("wal", [False, True], ids=["rollback", "wal"])
def test_restore_reaches_a_connection_held_open_by_another_process(
    wal: bool,
    sidecar_env: Callable[..., Sidecar],
    backup_dir: Path,
    tmp_path: Path,
    sql_session: Callable[..., SqlSession],
) -> None:
    """While another process keeps one connection open, a restore replaces the content and that
    SAME connection sees the restored rows at its next read; the journal mode is kept; the
    pre_restore archive verifies and holds exactly the content from before the restore."""
    source = make_db(tmp_path / "source" / "user_data.db", wal=wal, rows=250, tag="restored")
    live = make_db(tmp_path / "live" / "user_data.db", wal=wal, rows=100, tag="live")
    archive = library_archive(backup_dir, "to_restore", user=source)
    sidecar = sidecar_env(user=live)
    before = read_only_dump(live)

    app = sql_session(live)
    assert app.execute("SELECT count(*) FROM items") == [[100]]
    _ok(sidecar.run("restore", archive.name, "--force", "--db", "user"))
    assert app.execute("SELECT count(*) FROM items") == [[250]]
    assert app.execute("SELECT count(*) FROM items WHERE body LIKE 'live-%'") == [[0]]
    assert read_only_dump(live) == read_only_dump(source)
    app.execute("INSERT INTO items(body) VALUES ('after-restore')")  # the app goes on writing
    assert app.execute("SELECT count(*) FROM items") == [[251]]
    app.close()

    assert integrity(live) == "ok"
    assert journal_mode(live) == ("wal" if wal else "delete")
    (safety,) = _pre_restore(sidecar)
    _ok(sidecar.run("verify", safety.name))
    out = gnu_tar_extract(safety.path, tmp_path / "safety")
    assert read_only_dump(out / "user_data.db") == before


def test_restore_into_a_write_locked_wal_database_gives_up_cleanly(
    sidecar_env: Callable[..., Sidecar],
    backup_dir: Path,
    tmp_path: Path,
    sql_session: Callable[..., SqlSession],
) -> None:
    """When the application holds the WAL database's write lock past the lock timeout, the
    restore exits 1 saying it is locked, and the live content is left as the application's
    own transaction decides (here: rolled back to exactly the content from before)."""
    source = make_db(tmp_path / "source" / "user_data.db", wal=False, rows=30, tag="restored")
    live = make_db(tmp_path / "live" / "user_data.db", wal=True, rows=100, tag="live")
    library_archive(backup_dir, "blocked", user=source)
    before = read_only_dump(live)
    app = sql_session(live)
    app.execute("BEGIN EXCLUSIVE")
    app.execute("INSERT INTO items(body) VALUES ('uncommitted')")
    sidecar = sidecar_env(user=live, SIDECAR_LOCK_TIMEOUT="1s")
    result = sidecar.run("restore", "blocked", "--force", timeout=60)
    assert result.returncode == 1, result.stderr
    assert "locked" in one_error_line(result)
    app.execute("ROLLBACK")
    assert app.execute("SELECT count(*) FROM items") == [[100]]
    app.close()
    assert read_only_dump(live) == before
    assert integrity(live) == "ok"


# --- refusals and options ---------------------------------------------------------------------


class TwoDbScene(TypedDict):
    """The CLI on the live databases, and the databases (name -> path) live and archived."""

    sidecar: Sidecar
    live: dict[str, Path]
    source: dict[str, Path]


@pytest.fixture
def two_db_scene(
    sidecar_env: Callable[..., Sidecar], backup_dir: Path, tmp_path: Path, fixtures_dir: Path
) -> TwoDbScene:
    """An archive of both databases (arrow: the 2025-08-14 fixture, user: 250 rows), and live
    databases with other content (arrow: the 2025-08-13 fixture, user: 100 rows)."""
    src_arrow = tmp_path / "source" / "arrow_database.db"
    src_arrow.parent.mkdir()
    shutil.copyfile(fixtures_dir / "arrow_database_2025-08-14.db", src_arrow)
    src_user = make_db(tmp_path / "source" / "user_data.db", wal=True, rows=250, tag="archived")
    library_archive(backup_dir, "both", arrow=src_arrow, user=src_user)
    live_arrow = tmp_path / "live" / "arrow_database.db"
    live_arrow.parent.mkdir()
    shutil.copyfile(fixtures_dir / "arrow_database_2025-08-13.db", live_arrow)
    live_user = make_db(tmp_path / "live" / "user_data.db", wal=False, rows=100, tag="live")
    return {
        "sidecar": sidecar_env(arrow=live_arrow, user=live_user),
        "live": {"arrow": live_arrow, "user": live_user},
        "source": {"arrow": src_arrow, "user": src_user},
    }


def _snapshot_bytes(paths: dict[str, Path]) -> dict[str, bytes]:
    return {name: path.read_bytes() for name, path in paths.items()}


def test_dry_run_changes_nothing(two_db_scene: TwoDbScene) -> None:
    """`restore --dry-run` verifies and describes the plan but leaves every live file
    byte-identical and writes no archive (no pre_restore backup)."""
    sidecar, live = two_db_scene["sidecar"], two_db_scene["live"]
    before = _snapshot_bytes(live)
    archives = _archives(sidecar.backup_dir)
    result = _ok(sidecar.run("restore", "both", "--dry-run"))
    assert "dry run" in result.stdout
    assert _snapshot_bytes(live) == before
    assert _archives(sidecar.backup_dir) == archives


def test_restore_without_force_or_tty_refuses(two_db_scene: TwoDbScene) -> None:
    """`restore` with neither --force nor a terminal on stdin refuses with exit 1 and one error
    line, and changes nothing."""
    sidecar, live = two_db_scene["sidecar"], two_db_scene["live"]
    before = _snapshot_bytes(live)
    archives = _archives(sidecar.backup_dir)
    result = sidecar.run("restore", "both", input="y\n")
    assert result.returncode == 1, result.stderr
    assert "--force" in one_error_line(result)
    assert _snapshot_bytes(live) == before
    assert _archives(sidecar.backup_dir) == archives


@pytest.mark.parametrize(
    ("flags", "chosen"),
    [
        (("--db", "user"), "user"),
        (("--user-db-only",), "user"),
        (("--arrow-db-only",), "arrow"),
    ],
)
def test_selective_restore_touches_only_the_chosen_database(
    flags: tuple[str, ...], chosen: str, two_db_scene: TwoDbScene
) -> None:
    """A selective restore replaces the chosen database's content, leaves the other one
    byte-identical, and saves only the chosen one in the pre_restore archive."""
    sidecar, live, source = two_db_scene["sidecar"], two_db_scene["live"], two_db_scene["source"]
    other = "arrow" if chosen == "user" else "user"
    untouched = live[other].read_bytes()
    _ok(sidecar.run("restore", "both", "--force", *flags))
    assert read_only_dump(live[chosen]) == read_only_dump(source[chosen])
    assert live[other].read_bytes() == untouched
    (safety,) = _pre_restore(sidecar)
    assert safety.databases == (chosen,)


def test_unknown_database_name_is_bad_usage(two_db_scene: TwoDbScene) -> None:
    """`restore --db` with a database name that is not configured exits 2 and changes nothing."""
    sidecar, live = two_db_scene["sidecar"], two_db_scene["live"]
    before = _snapshot_bytes(live)
    result = sidecar.run("restore", "both", "--force", "--db", "nosuch")
    assert result.returncode == 2, result.stderr
    assert "nosuch" in one_error_line(result)
    assert _snapshot_bytes(live) == before
    assert _pre_restore(sidecar) == []


def test_archive_missing_the_requested_database_refuses(two_db_scene: TwoDbScene) -> None:
    """Restoring a database the archive does not hold exits 1 naming it, and changes nothing."""
    sidecar, live, source = two_db_scene["sidecar"], two_db_scene["live"], two_db_scene["source"]
    library_archive(sidecar.backup_dir, "user_only", user=source["user"])
    before = _snapshot_bytes(live)
    result = sidecar.run("restore", "user_only", "--force", "--db", "arrow")
    assert result.returncode == 1, result.stderr
    assert "arrow" in one_error_line(result)
    assert _snapshot_bytes(live) == before
    assert _pre_restore(sidecar) == []


def test_wal_destination_with_another_page_size_is_refused(
    sidecar_env: Callable[..., Sidecar], backup_dir: Path, tmp_path: Path
) -> None:
    """A WAL live database whose page size differs from the archive's copy is refused before
    anything changes: exit 1, a message about the page size, the live file byte-identical, and
    no pre_restore archive."""
    source = make_db(tmp_path / "source" / "user_data.db", wal=False, rows=50, page_size=8192)
    live = make_db(tmp_path / "live" / "user_data.db", wal=True, rows=100, page_size=4096)
    library_archive(backup_dir, "big_pages", user=source)
    sidecar = sidecar_env(user=live)
    before = live.read_bytes()
    result = sidecar.run("restore", "big_pages", "--force")
    assert result.returncode == 1, result.stderr
    assert "page size" in one_error_line(result)
    assert live.read_bytes() == before
    assert _pre_restore(sidecar) == []
    assert _archives(sidecar.backup_dir) == {"big_pages.tar.gz"}


def test_restore_creates_a_missing_database(
    sidecar_env: Callable[..., Sidecar], backup_dir: Path, tmp_path: Path
) -> None:
    """A restore to a database file that does not exist yet creates it with the archive's
    content, and leaves no temporary file beside it."""
    source = make_db(tmp_path / "source" / "user_data.db", wal=True, rows=75, tag="new")
    library_archive(backup_dir, "fresh", user=source)
    target_dir = tmp_path / "empty"
    target_dir.mkdir()
    target = target_dir / "user_data.db"
    sidecar = sidecar_env(user=target)
    result = _ok(sidecar.run("restore", "fresh", "--force", "--json"))
    payload = json.loads(result.stdout)
    assert payload["restored"] == ["user"]
    assert payload["pre_restore_archive"] is None
    assert read_only_dump(target) == read_only_dump(source)
    assert integrity(target) == "ok"
    assert sorted(p.name for p in target_dir.iterdir()) == ["user_data.db"]


def test_a_commit_failing_after_another_reports_what_was_restored(
    tmp_path: Path, backup_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two databases are locked and saved; then user's copy fails (injected into its step, after
    the go) while arrow's commits. The restore raises RestoreIncompleteError saying arrow was
    restored and naming the pre_restore archive that undoes it, which holds arrow's old content
    (and only arrow); user is unchanged; nothing is left in .rescue."""
    from backup_sidecar.archiver import livecopy, restore_archive
    from backup_sidecar.errors import RestoreIncompleteError

    src = tmp_path / "src"
    src.mkdir()
    live = tmp_path / "live"
    live.mkdir()
    new = {n: make_db(src / f"{n}.db", wal=False, rows=300, tag="new") for n in ("arrow", "user")}
    old = {n: make_db(live / f"{n}.db", wal=n == "user", rows=50, tag="old") for n in new}
    archive = library_archive(backup_dir, "both", **new)
    old_dump = {n: read_only_dump(p) for n, p in old.items()}
    real_progress = livecopy.LiveCopy._progress

    def failing(self: livecopy.LiveCopy, status: int, remaining: int, total: int) -> None:
        real_progress(self, status, remaining, total)
        if self.job.name == "user" and self.go.is_set():
            raise sqlite3.OperationalError("disk I/O error (injected)")

    monkeypatch.setattr(livecopy.LiveCopy, "_progress", failing)
    with pytest.raises(RestoreIncompleteError) as err:
        restore_archive(
            archive,
            databases={n: DatabaseSpec(n, p) for n, p in old.items()},
            selected=None,
            backup_dir=backup_dir,
            now=datetime(2026, 1, 2, tzinfo=UTC),
        )
    assert err.value.restored == ("arrow",)
    message = str(err.value)
    assert "restored arrow" in message and "user" in message and "injected" in message
    safety = err.value.pre_restore_archive
    assert safety and f"to undo, restore {safety}" in message
    assert read_only_dump(old["arrow"]) == read_only_dump(new["arrow"])
    assert read_only_dump(old["user"]) == old_dump["user"]
    (info,) = [a for a in list_archives(backup_dir) if a.name == safety]
    assert info.databases == ("arrow",) and info.status.value == "verified"
    saved = gnu_tar_extract(info.path, tmp_path / "saved")
    assert read_only_dump(saved / "arrow_database.db") == old_dump["arrow"]
    assert not (backup_dir / ".rescue").exists()


def test_a_safety_archive_that_cannot_be_written_keeps_the_replaced_content(
    tmp_path: Path,
    backup_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    sidecar_env: Callable[..., Sidecar],
) -> None:
    """The restore commits, then its safety archive fails (ENOSPC injected at create_backup):
    RestoreIncompleteError names the .rescue directory, which holds exactly the old database
    and the saved mark. Once its process is gone, the next run (a daemon's every backup; the
    CLI with -v) logs it (pre_restore_content_kept) and keeps it; a dead restore's directory
    without the mark (it never got to save, so nothing was replaced) is removed."""
    import errno
    import os

    from backup_sidecar.archiver import prerestore, rescued_content, restore_archive
    from backup_sidecar.errors import RestoreIncompleteError

    new = make_db(tmp_path / "src" / "user_data.db", wal=False, rows=300, tag="new")
    live = make_db(tmp_path / "live" / "user_data.db", wal=True, rows=50, tag="old")
    old_dump = read_only_dump(live)
    archive = library_archive(backup_dir, "good", user=new)

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(prerestore, "create_backup", full)
    with pytest.raises(RestoreIncompleteError) as err:
        restore_archive(
            archive,
            databases={"user": DatabaseSpec("user", live)},
            selected=None,
            backup_dir=backup_dir,
            now=datetime(2026, 1, 2, tzinfo=UTC),
        )
    assert err.value.restored == ("user",) and err.value.pre_restore_archive is None
    rescue = err.value.rescue
    assert rescue is not None and f"kept in {rescue}" in str(err.value)
    assert "No space left" in str(err.value)
    assert read_only_dump(live) == read_only_dump(new)
    assert read_only_dump(rescue / "user_data.db") == old_dump
    assert (rescue / ".saved").exists()
    assert rescued_content(backup_dir) == []  # its process (this one) is still running

    dead_pid = 2**22 + 1  # above the kernel's pid_max default: no such process
    kept = rescue.with_name(rescue.name.replace(f".{os.getpid()}.", f".{dead_pid}."))
    rescue.rename(kept)
    unsaved = backup_dir / ".rescue" / f"pre_restore_20260102_000000.{dead_pid}.9"
    unsaved.mkdir()
    (unsaved / "user_data.db").write_bytes(b"partial")
    sidecar = sidecar_env(user=live, arrow=tmp_path / "live" / "arrow_database.db")
    result = sidecar.run("-v", "backup", "--db", "user")  # one-shot commands log with -v
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if is_log_record(line)]
    assert any(
        e["event"] == "pre_restore_content_kept" and e["path"] == str(kept) for e in events
    ), result.stderr
    assert kept.is_dir() and not unsaved.exists()


def test_two_restores_making_and_removing_rescue_directories_at_once_never_fail(
    tmp_path: Path,
) -> None:
    """Two threads each make a rescue directory and remove it, 400 times, as two restores
    (a socket restore beside the drill's) do: none fails. Before, one restore's removal of the
    empty `.rescue` between the other's open of it and its mkdir failed that restore with
    `cannot create .../.rescue: No such file or directory` (seen in the long run)."""
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            for _ in range(400):
                remove_rescue(new_rescue_dir(tmp_path, datetime.now(UTC)))
        except BaseException as exc:  # noqa: BLE001 - any failure is the finding
            errors.append(exc)

    threads = [threading.Thread(target=churn) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
