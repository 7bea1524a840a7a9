"""Backups of live databases: consistent snapshots under writers, the archive contract, failures.

Real SQLite files, a real writer process, GNU tar to read the archives, and the real CLI.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backup_sidecar import __version__
from backup_sidecar.archiver import ArchiveStatus, DatabaseSpec, create_backup
from backup_sidecar.archiver.snapshot import Snapshot
from backup_sidecar.errors import DatabaseLockedError, IntegrityCheckError
from support.archives import backup_of, corrupt_table_page, gnu_tar_extract, gnu_tar_names
from support.cli import Sidecar, one_error_line
from support.databases import SqlSession, Writer, integrity, make_db

METADATA = "backup_metadata.json"

#: The contract's keys (DESIGN.md example) and the type each value must have.
TOP_KEYS: dict[str, type | tuple[type, ...]] = {
    "backup_name": str,
    "created_at": str,
    "version": str,
    "format_version": int,
    "tool_version": str,
    "policy": str,
    "includes": dict,
    "arrow_db_stats": dict,
    "user_db_stats": dict,
    "databases": dict,
    "duration_seconds": (int, float),
}
STATS_KEYS: dict[str, type | tuple[type, ...]] = {"table_count": int, "file_size_mb": (int, float)}
ENTRY_KEYS: dict[str, type | tuple[type, ...]] = {
    "file": str,
    "source_path": str,
    "size_bytes": int,
    "sha256": str,
    "page_size": int,
    "page_count": int,
    "journal_mode": str,
    "user_version": int,
    "schema_sha256": str,
    "table_count": int,
    "row_counts": dict,
    "integrity_check": str,
    "sqlite_version": str,
    "snapshot_seconds": (int, float),
}

NOW = datetime(2026, 11, 25, 3, 0, 0, 123456, tzinfo=UTC)


def _ticks(db: Path) -> list[int]:
    conn = sqlite3.connect(db)
    try:
        return [row[0] for row in conn.execute("SELECT n FROM ticks ORDER BY n")]
    finally:
        conn.close()


def _count_after(writer: Writer, *, deadline_s: float = 10.0) -> int:
    """The writer's commit count, read once it has advanced past the first read after the backup.

    The status file lags the commits by at most one, so a value read after it changes once is
    at least every commit made before this call began.
    """
    first = writer.committed()
    deadline = time.monotonic() + deadline_s
    while (now := writer.committed()) == first:
        assert time.monotonic() < deadline, "the writer stopped committing"
        time.sleep(0.002)
    return now


def _wait_for_commits(writer: Writer, count: int, *, deadline_s: float = 10.0) -> None:
    """Poll until the writer has committed at least ``count`` rows (so the backup races it)."""
    deadline = time.monotonic() + deadline_s
    while writer.committed() < count:
        assert time.monotonic() < deadline, f"the writer did not reach {count} commits"
        time.sleep(0.005)


def _type_ok(value: object, kind: type | tuple[type, ...]) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool)


def _check_contract(meta: dict[str, object], *, names: list[str]) -> None:
    for key, kind in TOP_KEYS.items():
        assert key in meta, f"metadata lacks {key!r}"
        assert _type_ok(meta[key], kind), f"{key!r} is {type(meta[key]).__name__}"
    assert meta["version"] == "1.0.0"
    assert meta["format_version"] == 2
    assert meta["tool_version"] == __version__  # what `backup-sidecar --version` prints
    created = datetime.fromisoformat(str(meta["created_at"]))
    assert created.tzinfo is not None
    assert meta["includes"] == {
        "arrow_database": "arrow" in names,
        "user_database": "user" in names,
    }
    for stats in ("arrow_db_stats", "user_db_stats"):
        block = meta[stats]
        assert isinstance(block, dict)
        for key, kind in STATS_KEYS.items():
            assert _type_ok(block[key], kind), f"{stats}.{key}"
    databases = meta["databases"]
    assert isinstance(databases, dict)
    assert sorted(databases) == sorted(names)
    for name, entry in databases.items():
        for key, kind in ENTRY_KEYS.items():
            assert key in entry, f"databases.{name} lacks {key!r}"
            assert _type_ok(entry[key], kind), f"databases.{name}.{key}"
        assert entry["integrity_check"] == "ok"
        assert entry["size_bytes"] == entry["page_size"] * entry["page_count"]
        # The read lock is held inside the backup's own time.
        assert 0 <= entry["snapshot_seconds"] <= meta["duration_seconds"]


def _assert_archive_sound(
    archive: Path, work: Path, *, names: list[str]
) -> tuple[Path, dict[str, Any]]:
    """GNU tar lists the metadata first and extracts databases that pass integrity_check and
    match the metadata's checksums; returns the extraction directory and the metadata."""
    listing = gnu_tar_names(archive)
    assert listing[0] == METADATA, listing
    out = gnu_tar_extract(archive, work / "extracted")
    meta = json.loads((out / METADATA).read_text())
    _check_contract(meta, names=names)
    for name, entry in meta["databases"].items():
        member = out / entry["file"]
        assert integrity(member) == "ok", name
        assert hashlib.sha256(member.read_bytes()).hexdigest() == entry["sha256"]
        assert member.stat().st_size == entry["size_bytes"]
    assert sorted(listing) == sorted([METADATA, *(e["file"] for e in meta["databases"].values())])
    return out, meta


def _staging_work_areas(backup_dir: Path) -> list[Path]:
    staging = backup_dir / ".staging"
    return sorted(staging.iterdir()) if staging.is_dir() else []


def test_wal_backup_under_a_fast_writer_is_one_committed_state(
    wal_db: Path,
    arrow_db: Path,
    backup_dir: Path,
    tmp_path: Path,
    writer_process: Callable[..., Writer],
) -> None:
    """A backup of a WAL database while another process commits as fast as it can holds exactly
    the rows 1..n of one committed state (no gap, never torn), with n between the writer's count
    before and after the backup; the writer sees no error; tar reads it; the metadata keeps the
    whole contract."""
    writer = writer_process(wal_db, rate=0)
    _wait_for_commits(writer, 200)
    before = writer.committed()
    info = backup_of(
        {"arrow": arrow_db, "user": wal_db},
        backup_dir=backup_dir,
        name="under_writer",
        now=NOW,
        lock_timeout=10,
    )
    after = _count_after(writer)
    report = writer.stop()
    assert report["errors"] == 0
    assert info.path == backup_dir / "under_writer.tar.gz"

    out, meta = _assert_archive_sound(info.path, tmp_path, names=["arrow", "user"])
    ticks = _ticks(out / "user_data.db")
    n = len(ticks)
    assert ticks == list(range(1, n + 1))
    assert before <= n <= after, (before, n, after)
    assert meta["databases"]["user"]["journal_mode"] == "wal"
    assert meta["databases"]["user"]["row_counts"]["ticks"] == n
    assert meta["databases"]["user"]["source_path"] == str(wal_db)
    assert meta["backup_name"] == "under_writer"
    # The staged copy is switched to a rollback journal: no -wal is needed to read the member.
    conn = sqlite3.connect(out / "user_data.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_wal_backup_holds_rows_still_only_in_the_wal(
    wal_db: Path, backup_dir: Path, tmp_path: Path
) -> None:
    """Rows committed by a connection that never checkpoints (they live only in -wal while it
    stays open) are in the archive: the snapshot goes through SQLite, not the main file."""
    conn = sqlite3.connect(wal_db)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.executemany("INSERT INTO items(body) VALUES (?)", [(f"wal-only-{i}",) for i in range(500)])
    conn.commit()
    try:
        assert Path(f"{wal_db}-wal").stat().st_size > 0
        shutil.copyfile(wal_db, tmp_path / "copy.db")  # the main file alone lacks the rows
        probe = sqlite3.connect(tmp_path / "copy.db")
        assert probe.execute("SELECT count(*) FROM items").fetchone()[0] == 100
        probe.close()

        info = backup_of(
            {"user": wal_db},
            backup_dir=backup_dir,
            name="wal_only",
            now=NOW,
        )
    finally:
        conn.close()
    out = gnu_tar_extract(info.path, tmp_path / "out")
    check = sqlite3.connect(out / "user_data.db")
    assert check.execute("SELECT count(*) FROM items").fetchone()[0] == 600
    assert (
        check.execute("SELECT count(*) FROM items WHERE body LIKE 'wal-only-%'").fetchone()[0]
        == 500
    )
    check.close()


def test_rollback_backup_under_a_writer_is_one_committed_state(
    rollback_db: Path, backup_dir: Path, tmp_path: Path, writer_process: Callable[..., Writer]
) -> None:
    """A rollback-journal database written by another process (500 commits/s) backs up to one
    committed state: ticks 1..n without a gap, n within the writer's before/after counts, and
    the writer never sees an error."""
    writer = writer_process(rollback_db, rate=500)
    _wait_for_commits(writer, 50)
    before = writer.committed()
    info = backup_of(
        {"user": rollback_db},
        backup_dir=backup_dir,
        name="rollback_writer",
        now=NOW,
        lock_timeout=10,
    )
    after = _count_after(writer)
    report = writer.stop()
    assert report["errors"] == 0
    assert gnu_tar_names(info.path)[0] == METADATA
    out = gnu_tar_extract(info.path, tmp_path / "out")
    assert integrity(out / "user_data.db") == "ok"
    ticks = _ticks(out / "user_data.db")
    assert ticks == list(range(1, len(ticks) + 1))
    assert before <= len(ticks) <= after, (before, len(ticks), after)
    meta = json.loads((out / METADATA).read_text())
    assert meta["databases"]["user"]["journal_mode"] == "delete"
    assert meta["includes"] == {"arrow_database": False, "user_database": True}


def test_snapshot_seconds_cover_the_wait_for_a_writer(
    rollback_db: Path, backup_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recorded snapshot time spans the whole one-step copy, retries behind a writer's
    exclusive lock included: it is how long the application's writers can have waited."""
    from backup_sidecar.archiver import snapshot as snapshot_mod
    from backup_sidecar.archiver.sqlitefacts import copy_in_one_step as real_copy

    holder = sqlite3.connect(rollback_db, isolation_level=None)
    tries: list[float] = []

    def copy_behind_a_writer(src: sqlite3.Connection, dst: sqlite3.Connection, **kw: Any) -> None:
        holder.execute("BEGIN EXCLUSIVE")

        def each_try() -> bool:  # the backup API's progress callback, after every step
            tries.append(time.monotonic())
            if len(tries) == 3:
                holder.execute("COMMIT")  # the writer lets go after three busy tries
            return False

        real_copy(src, dst, **{**kw, "should_stop": each_try})

    monkeypatch.setattr(snapshot_mod, "copy_in_one_step", copy_behind_a_writer)
    try:
        info = backup_of(
            {"user": rollback_db},
            backup_dir=backup_dir,
            name="waited",
            now=NOW,
        )
    finally:
        holder.close()
    assert len(tries) >= 4  # three busy tries, then the copy
    waited = tries[2] - tries[0]
    assert info.manifest is not None
    snapshot_seconds = info.manifest.databases["user"].snapshot_seconds
    assert snapshot_seconds is not None
    assert snapshot_seconds >= round(waited, 3) > 0


def test_locked_source_fails_cleanly_within_the_deadline(
    rollback_db: Path, backup_dir: Path, sql_session: Callable[..., SqlSession]
) -> None:
    """A rollback-journal source held under BEGIN EXCLUSIVE by another process past the lock
    timeout makes create_backup raise DatabaseLockedError soon after the timeout, and leaves no
    archive and no staging work area behind."""
    holder = sql_session(rollback_db)
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO items(body) VALUES ('uncommitted')")
    timeout = 1.0
    started = time.monotonic()
    with pytest.raises(DatabaseLockedError) as caught:
        backup_of(
            {"user": rollback_db},
            backup_dir=backup_dir,
            name="locked",
            now=NOW,
            lock_timeout=timeout,
        )
    elapsed = time.monotonic() - started
    assert timeout <= elapsed < timeout + 3.0, elapsed
    assert caught.value.name == "user"
    assert str(rollback_db) in str(caught.value)
    holder.execute("ROLLBACK")
    leftovers = {p.name for p in backup_dir.iterdir()}
    assert leftovers <= {".staging", ".locks"}, leftovers
    assert _staging_work_areas(backup_dir) == []


# --- through the CLI ------------------------------------------------------------------------


def _archives(backup_dir: Path) -> list[str]:
    return sorted(p.name for p in backup_dir.glob("*.tar.gz"))


def test_backup_name_with_a_slash_is_bad_usage(
    sidecar_env: Callable[..., Sidecar], wal_db: Path, backup_dir: Path
) -> None:
    """`backup --name` with a path separator is refused as bad usage (exit 2), nothing written."""
    sidecar = sidecar_env(user=wal_db)
    result = sidecar.run("backup", "--user-db-only", "--name", "../escape")
    assert result.returncode == 2, result.stderr
    assert "escape" in one_error_line(result)
    assert _archives(backup_dir) == []
    assert not (backup_dir.parent / "escape.tar.gz").exists()


def test_backup_never_overwrites_an_existing_name(
    sidecar_env: Callable[..., Sidecar], wal_db: Path, backup_dir: Path
) -> None:
    """A second backup under an existing name fails with one line naming the archive, and the
    existing archive keeps its exact bytes."""
    sidecar = sidecar_env(user=wal_db)
    first = sidecar.run("backup", "--user-db-only", "--name", "keep_me")
    assert first.returncode == 0, first.stderr
    archive = backup_dir / "keep_me.tar.gz"
    original = archive.read_bytes()
    conn = sqlite3.connect(wal_db)
    conn.execute("INSERT INTO items(body) VALUES ('changed')")
    conn.commit()
    conn.close()
    second = sidecar.run("backup", "--user-db-only", "--name", "keep_me")
    assert second.returncode in (1, 2), second.stderr
    assert "keep_me" in one_error_line(second)
    assert archive.read_bytes() == original
    assert _archives(backup_dir) == ["keep_me.tar.gz"]


def test_two_concurrent_backups_with_one_name_one_wins(
    sidecar_env: Callable[..., Sidecar], wal_db: Path, backup_dir: Path
) -> None:
    """Two `backup --name same` processes started together: exactly one succeeds, the other
    fails with one line, and the one archive is sound."""
    sidecar = sidecar_env(user=wal_db)
    cmd = [sys.executable, "-m", "backup_sidecar", "backup", "--user-db-only", "--name", "same"]
    procs = [
        subprocess.Popen(
            cmd, env=sidecar.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes[0] == 0 and codes[1] != 0, results
    loser = next(err for code, _, err in results if code != 0)
    # The loser either found the name taken or the database busy with the winner's backup.
    line = one_error_line(subprocess.CompletedProcess([], 1, "", loser))
    assert "same" in line or "busy" in line, line
    assert _archives(backup_dir) == ["same.tar.gz"]
    assert gnu_tar_names(backup_dir / "same.tar.gz")[0] == METADATA


def _assert_nothing_created(backup_dir: Path) -> None:
    assert _archives(backup_dir) == []
    assert _staging_work_areas(backup_dir) == []


@pytest.mark.parametrize("kind", ["directory", "not_sqlite", "missing"])
def test_bad_source_fails_with_one_line(
    kind: str, sidecar_env: Callable[..., Sidecar], backup_dir: Path, tmp_path: Path
) -> None:
    """A user database path that is a directory, a file that is not SQLite, or a missing file
    fails the backup with exit 1 and one stderr line naming the path; nothing is created."""
    bad = tmp_path / "bad_user.db"
    if kind == "directory":
        bad.mkdir()
    elif kind == "not_sqlite":
        bad.write_text("this is not a database\n" * 100)
    sidecar = sidecar_env(user=bad)
    result = sidecar.run("backup", "--user-db-only", "--name", "bad_source")
    assert result.returncode == 1, result.stderr
    assert str(bad) in one_error_line(result)
    _assert_nothing_created(backup_dir)
    if kind == "missing":
        assert not bad.exists()
    elif kind == "not_sqlite":
        assert bad.read_text().startswith("this is not a database")


@pytest.mark.parametrize("kind", ["missing", "under_a_file"])
def test_unusable_backup_dir_fails_with_one_line(
    kind: str, sidecar_env: Callable[..., Sidecar], wal_db: Path, tmp_path: Path
) -> None:
    """A backup directory that does not exist, or whose path runs through a regular file, fails
    the backup with exit 1 and one stderr line naming it; nothing is created."""
    if kind == "missing":
        target = tmp_path / "no_such_dir"
    else:
        (tmp_path / "a_file").write_text("x")
        target = tmp_path / "a_file" / "backups"
    sidecar = sidecar_env(user=wal_db, BACKUP_DIR=str(target))
    result = sidecar.run("backup", "--user-db-only", "--name", "nowhere")
    assert result.returncode == 1, result.stderr
    assert str(target) in one_error_line(result)
    assert not target.exists()


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A directory that an unprivileged user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="sidecar-world-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_unwritable_backup_dir_fails_with_one_line(
    sidecar_env: Callable[..., Sidecar], world_dir: Path
) -> None:
    """A backup directory the (unprivileged) user cannot write fails the backup with exit 1 and
    one stderr line naming it; nothing is created in it."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run the CLI as an unprivileged user")
    db = world_dir / "user_data.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, body TEXT)")
    conn.commit()
    conn.close()
    db.chmod(0o644)
    target = world_dir / "readonly_backups"
    target.mkdir()
    target.chmod(0o555)
    sidecar = sidecar_env(user=db, BACKUP_DIR=str(target))
    env = dict(sidecar.env, HOME=str(world_dir))
    as_nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable]
    probe = subprocess.run(
        [*as_nobody, "-c", "import backup_sidecar"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"the unprivileged user cannot import the package: {probe.stderr.strip()}")
    result = subprocess.run(
        [*as_nobody, "-m", "backup_sidecar", "backup", "--user-db-only", "--name", "denied"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert str(target) in one_error_line(result)
    assert list(target.iterdir()) == []


# --- list -------------------------------------------------------------------------------------


def test_list_json_is_newest_first(
    sidecar_env: Callable[..., Sidecar], wal_db: Path, backup_dir: Path
) -> None:
    """`list --json` orders archives by creation time, newest first, whatever their names."""
    for i, name in enumerate(["zz_oldest", "mm_middle", "aa_newest"]):
        backup_of(
            {"user": wal_db},
            backup_dir=backup_dir,
            name=name,
            now=datetime(2026, 1, 1 + i, tzinfo=UTC),
        )
    result = sidecar_env(user=wal_db).run("list", "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [a["name"] for a in listed] == ["aa_newest", "mm_middle", "zz_oldest"]
    assert all(a["status"] == "verified" and a["databases"] == ["user"] for a in listed)


def test_list_shows_garbage_archive_as_damaged(
    sidecar_env: Callable[..., Sidecar], wal_db: Path, backup_dir: Path
) -> None:
    """An archive whose content is garbage is listed as damaged with a reason, never skipped,
    next to the good ones."""
    backup_of(
        {"user": wal_db},
        backup_dir=backup_dir,
        name="good",
        now=NOW,
    )
    (backup_dir / "daily_20260101_000000.tar.gz").write_bytes(os.urandom(4096))
    sidecar = sidecar_env(user=wal_db)
    result = sidecar.run("list", "--json")
    assert result.returncode == 0, result.stderr
    listed = {a["name"]: a for a in json.loads(result.stdout)}
    assert set(listed) == {"good", "daily_20260101_000000"}
    damaged = listed["daily_20260101_000000"]
    assert damaged["status"] == "damaged"
    assert damaged["verified"] is False
    assert damaged["error"]
    assert listed["good"]["status"] == "verified"
    text = sidecar.run("list")
    assert text.returncode == 0, text.stderr
    line = next(ln for ln in text.stdout.splitlines() if "daily_20260101_000000" in ln)
    assert "damaged" in line


def test_cli_backup_of_a_locked_source_fails_after_the_configured_timeout(
    sidecar_env: Callable[..., Sidecar],
    rollback_db: Path,
    backup_dir: Path,
    sql_session: Callable[..., SqlSession],
) -> None:
    """`SIDECAR_LOCK_TIMEOUT` reaches the snapshot: a CLI backup of a source held under BEGIN
    EXCLUSIVE exits 1 soon after that timeout, with one line saying it is locked, and leaves no
    archive or staging area."""
    holder = sql_session(rollback_db)
    holder.execute("BEGIN EXCLUSIVE")
    sidecar = sidecar_env(user=rollback_db, SIDECAR_LOCK_TIMEOUT="1s")
    started = time.monotonic()
    result = sidecar.run("backup", "--user-db-only", "--name", "locked_cli", timeout=60)
    elapsed = time.monotonic() - started
    holder.execute("ROLLBACK")
    assert result.returncode == 1, result.stderr
    line = one_error_line(result)
    assert "locked" in line and str(rollback_db) in line, line
    assert elapsed < 1.0 + 15.0, elapsed  # the interpreter's start-up under load is most of it
    _assert_nothing_created(backup_dir)


# --- one thread or two ------------------------------------------------------------------------


def test_one_or_two_threads_write_the_same_checked_archive(
    backup_dir: Path, rollback_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one thread the check runs on the calling thread before packing, with two on a
    worker thread beside it (paced or not); the archive holds the same checked bytes."""
    from backup_sidecar.archiver import packing

    ran_on: list[str] = []
    check_all = packing.check_all

    def recording(snaps: Sequence[Snapshot], should_stop: Callable[[], bool]) -> list[str]:
        ran_on.append(threading.current_thread().name)
        return check_all(snaps, should_stop)

    monkeypatch.setattr(packing, "check_all", recording)
    members = {}
    for threads, pace in ((1, False), (2, False), (2, True)):
        info = backup_of(
            {"user": rollback_db},
            backup_dir=backup_dir,
            name=f"threads_{threads}_{pace}",
            now=NOW,
            threads=threads,
            pace=pace,
        )
        assert info.manifest is not None
        entry = info.manifest.databases["user"]
        assert entry.integrity_check == "ok"
        member = gnu_tar_extract(info.path, backup_dir / f"x{threads}{pace}") / entry.file
        assert hashlib.sha256(member.read_bytes()).hexdigest() == entry.sha256
        members[threads, pace] = member.read_bytes()
    assert ran_on[0] == threading.current_thread().name
    assert all(t != ran_on[0] and t.startswith("integrity") for t in ran_on[1:]), ran_on
    assert members[1, False] == members[2, False] == members[2, True]


def test_one_thread_does_not_pack_a_copy_that_fails_the_check(
    backup_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked first, a copy that fails integrity_check is refused before any compression, and
    nothing is left in the backup directory."""
    from backup_sidecar.archiver import packing

    db = make_db(tmp_path / "items.db", wal=False, rows=10)  # items fits one leaf page
    db.write_bytes(corrupt_table_page(db.read_bytes(), tmp_path))
    packed: list[object] = []

    def pack_databases(*args: object, **kwargs: object) -> list[str]:
        packed.append(args)
        return []

    monkeypatch.setattr(packing, "pack_databases", pack_databases)
    with pytest.raises(IntegrityCheckError) as caught:
        backup_of(
            {"user": db},
            backup_dir=backup_dir,
            name="corrupt",
            now=NOW,
            threads=1,
        )
    assert "integrity" in str(caught.value) and str(db) in str(caught.value)
    assert packed == []
    _assert_nothing_created(backup_dir)


def test_paced_packing_yields_the_cpu_between_small_slices_only_while_the_check_runs(
    backup_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While ``pace()`` is true the packer reads 16 KiB slices and sleeps after each; once it
    turns false (the check finished) it reads 1 MiB chunks without sleeping, and the archive
    body is the same as an unpaced one."""
    from types import SimpleNamespace

    from backup_sidecar.archiver import packing
    from backup_sidecar.archiver.snapshot import take_snapshot

    db = make_db(tmp_path / "big.db", wal=False, rows=80_000)
    snap = take_snapshot(DatabaseSpec("user", db), dest=tmp_path / "staged.db", lock_timeout=5)
    size = snap.staged.stat().st_size
    assert size > 4 * packing.CHUNK // 2, "the copy should span several slices and chunks"
    sleeps: list[float] = []
    monkeypatch.setattr(packing, "time", SimpleNamespace(sleep=sleeps.append))
    reads: list[int] = []
    real_open = Path.open

    def counting_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, *args, **kwargs)
        if self == snap.staged:
            read = handle.read

            def counted_read(n: int = -1) -> bytes:
                reads.append(n)
                chunk: bytes = read(n)
                return chunk

            handle.read = counted_read
        return handle

    monkeypatch.setattr(Path, "open", counting_open)
    paced_slices = 20
    pace_calls = iter(range(10**9))

    def pack(out: Path, pace: Callable[[], bool]) -> list[str]:
        return packing.pack_databases(
            [snap], out=out, level=1, now=NOW, progress=lambda *a: None,
            should_stop=lambda: False, pace=pace,
        )  # fmt: skip

    digests = pack(tmp_path / "paced.gz", lambda: next(pace_calls) < paced_slices)
    assert reads[:paced_slices] == [packing.SLICE] * paced_slices
    assert set(reads[paced_slices:]) == {packing.CHUNK}
    assert sleeps == [packing.PAUSE_S] * paced_slices
    reads.clear()
    assert pack(tmp_path / "plain.gz", lambda: False) == digests
    assert set(reads) == {packing.CHUNK}
    assert (tmp_path / "paced.gz").read_bytes() == (tmp_path / "plain.gz").read_bytes()


@pytest.mark.parametrize("pace_from", [0, None], ids=["large enough", "below the bound"])
def test_only_copies_of_pace_from_bytes_or_more_are_packed_paced(
    backup_dir: Path,
    rollback_db: Path,
    monkeypatch: pytest.MonkeyPatch,
    pace_from: int | None,
) -> None:
    """With ``pace`` and the check running all along (held until the packing is over), copies
    of at least `PACE_FROM_BYTES` are packed in paced slices; smaller ones (a 100 MiB backup's
    paced packing outlasted its check by a fifth) are packed unpaced."""
    from types import SimpleNamespace

    from backup_sidecar.archiver import packing

    if pace_from is not None:
        monkeypatch.setattr(packing, "PACE_FROM_BYTES", pace_from)
    assert rollback_db.stat().st_size < packing.PACE_FROM_BYTES or pace_from == 0
    sleeps: list[float] = []
    monkeypatch.setattr(packing, "time", SimpleNamespace(sleep=sleeps.append))
    packed = threading.Event()
    check_all, pack_databases = packing.check_all, packing.pack_databases

    def held_check(snaps: Sequence[Snapshot], should_stop: Callable[[], bool]) -> list[str]:
        assert packed.wait(60), "the packing never finished"
        return check_all(snaps, should_stop)

    def pack(*args: Any, **kwargs: Any) -> list[str]:
        try:
            return pack_databases(*args, **kwargs)
        finally:
            packed.set()

    monkeypatch.setattr(packing, "check_all", held_check)
    monkeypatch.setattr(packing, "pack_databases", pack)
    info = backup_of(
        {"user": rollback_db}, backup_dir=backup_dir, name="p", now=NOW, threads=2, pace=True
    )
    assert info.status == ArchiveStatus.VERIFIED
    if pace_from == 0:
        assert sleeps and set(sleeps) == {packing.PAUSE_S}
    else:
        assert sleeps == []


def _many_tables_db(path: Path, tables: int) -> Path:
    conn = sqlite3.connect(path)
    for i in range(tables):
        name = f"table_{i:04d}_with_a_long_descriptive_name"
        conn.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, v BLOB)")
        conn.executemany(f"INSERT INTO {name}(v) VALUES (randomblob(64))", [()] * i)
    conn.commit()
    conn.close()
    return path


def _first_member(archive: Path) -> tuple[int, bytes]:
    """The first gzip member's length and content."""
    import zlib

    data = archive.read_bytes()
    first = zlib.decompressobj(31)
    content = first.decompress(data)
    return len(data) - len(first.unused_data), content


def test_the_metadata_fills_the_room_left_before_the_databases(
    backup_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The databases are compressed straight into the archive behind room for the metadata; the
    metadata member, written last, fills that room exactly, even for 300 tables with row
    counts (nothing is copied), and holds the metadata member alone."""
    from backup_sidecar.archiver import backup as backup_mod
    from backup_sidecar.archiver import metawrite

    db = _many_tables_db(tmp_path / "many.db", 300)
    rooms: list[int] = []

    def recording(name: str, policy: str, now: datetime, snaps: Sequence[Snapshot]) -> int:
        rooms.append(metawrite.metadata_room(name, policy, now, snaps))
        return rooms[-1]

    def no_copy(*args: object, **kwargs: object) -> Path:
        raise AssertionError("the metadata did not fit the room left for it")

    monkeypatch.setattr(backup_mod, "metadata_room", recording)
    monkeypatch.setattr(metawrite, "relocate", no_copy)
    info = create_backup(
        [DatabaseSpec("user", db)], backup_dir=backup_dir, name="many", policy="m", now=NOW
    )
    assert info.manifest is not None and len(info.manifest.databases["user"].row_counts) == 300
    length, content = _first_member(info.path)
    assert [length] == rooms
    assert content.startswith(_member_header_bytes(METADATA, content))
    assert gnu_tar_names(info.path) == [METADATA, info.manifest.databases["user"].file]


def _member_header_bytes(name: str, content: bytes) -> bytes:
    """The tar header at the start of ``content``, checked to name ``name`` (and nothing after
    the metadata's padding)."""
    header = tarfile.TarInfo.frombuf(content[:512], "utf-8", "strict")
    assert header.name == name
    assert len(content) == 512 + header.size + (-header.size % 512)
    return content[:512]


def test_metadata_larger_than_its_room_is_moved_not_cut(
    backup_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should the metadata not fit the room left for it, the archive is rewritten with room of
    the right size: it verifies, GNU tar reads it, and nothing is left staged."""
    from backup_sidecar.archiver import backup as backup_mod
    from backup_sidecar.archiver import verify_archive
    from backup_sidecar.archiver.staging import staging_area

    db = make_db(tmp_path / "items.db", wal=True, rows=2000)
    monkeypatch.setattr(backup_mod, "metadata_room", lambda *args: 64)
    info = create_backup(
        [DatabaseSpec("user", db)], backup_dir=backup_dir, name="moved", policy="m", now=NOW
    )
    length, content = _first_member(info.path)
    assert length > 64 and _member_header_bytes(METADATA, content)
    assert gnu_tar_names(info.path) == [METADATA, "user_data.db"]
    with staging_area(backup_dir, purpose="verify") as area:
        verify_archive(info.path, staging=area)
    assert _staging_work_areas(backup_dir) == []
