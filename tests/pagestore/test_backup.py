"""Page backups of live databases: one read transaction, only new pages stored."""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from backup_sidecar import pagestore
from backup_sidecar.errors import (
    PageBackupExistsError,
    PageBackupNameError,
    PageReadError,
    PageStoreBusyError,
    UnsafeEntryError,
)
from backup_sidecar.pagestore.reader import read_pages
from support.databases import Writer, make_db
from support.pages import NOW, backup, pack_files, rebuilt


def _wait_for(cond: Callable[[], bool], *, deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while not cond():
        assert time.monotonic() < end, "condition not met before the deadline"
        time.sleep(0.01)


def _ticks(image: bytes, tmp_path: Path) -> int:
    path = tmp_path / "ticks-check.db"
    path.write_bytes(image)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return int(conn.execute("SELECT count(*) FROM ticks").fetchone()[0])
    finally:
        conn.close()
        path.unlink()


def test_wal_reader_never_blocks_a_writer_and_sees_one_snapshot(
    tmp_path: Path, writer_process: Callable[..., Writer]
) -> None:
    """While the read transaction is open (half the pages read), a real writer process keeps
    committing in WAL mode, and the image read is still the snapshot of the start: it passes
    integrity_check and holds no row committed after the read began."""
    db = make_db(tmp_path / "live.db", wal=True, rows=3000)
    writer = writer_process(db, rate=0)
    with read_pages(db) as (info, pages):
        before = writer.committed()
        head = [next(pages) for _ in range(info.page_count // 2)]
        _wait_for(lambda: writer.committed() >= before + 50)
        image = b"".join(head) + b"".join(pages)
    report = writer.stop()
    assert report["errors"] == 0
    assert len(image) == info.page_count * info.page_size
    assert _ticks(image, tmp_path) <= before + 1


def test_backup_under_a_live_writer_rebuilds_consistent(
    tmp_path: Path, store: Path, writer_process: Callable[..., Writer]
) -> None:
    """Backups taken while a writer commits as fast as it can rebuild into images that pass
    integrity_check, each holding a commit count between the writer's before and after."""
    db = make_db(tmp_path / "live.db", wal=True, rows=2000)
    writer = writer_process(db, rate=0)
    for i in range(3):
        low = writer.committed()
        backup(db, store, f"b{i}")
        high = writer.committed()
        assert low - 1 <= _ticks(rebuilt(store, f"b{i}", tmp_path / "out"), tmp_path) <= high + 1
    assert writer.stop()["errors"] == 0


def test_rollback_database_backup_is_its_file(
    tmp_path: Path, store: Path, writer_process: Callable[..., Writer]
) -> None:
    """A rollback-journal database is backed up while a writer waits its turn (no error), and
    once quiet its backup rebuilds to exactly the bytes of its file."""
    db = make_db(tmp_path / "live.db", wal=False, rows=500)
    writer = writer_process(db, rate=200)
    backup(db, store, "busy")
    assert writer.stop()["errors"] == 0
    m = backup(db, store, "quiet")
    assert rebuilt(store, "quiet", tmp_path / "out") == db.read_bytes()
    assert m.header.wal is False
    assert m.image_sha256 == hashlib.sha256(db.read_bytes()).hexdigest()


def test_manifest_records_size_count_and_header(tmp_path: Path, store: Path) -> None:
    """The manifest carries page size, page count, the header's fields (user_version, WAL
    mode) and what the backup read and stored."""
    db = make_db(tmp_path / "live.db", wal=True, rows=300, page_size=8192)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version=7")
    conn.close()
    m = backup(db, store, "first")
    assert (m.page_size, m.header.page_size, m.header.user_version) == (8192, 8192, 7)
    assert m.header.wal is True
    assert m.page_count == m.stats["pages_read"] == m.stats["pages_new"]
    assert m.stats["bytes_stored"] == sum(p.stat().st_size for p in (store / "packs").iterdir())


def test_unchanged_database_stores_nothing_new(tmp_path: Path, store: Path) -> None:
    """A second backup of an unchanged database writes no pack and a manifest of a few runs."""
    db = make_db(tmp_path / "live.db", wal=True, rows=3000)
    backup(db, store, "first")
    packs = pack_files(store)
    m = backup(db, store, "second")
    assert m.stats["pages_new"] == 0 and m.stats["bytes_stored"] == 0
    assert pack_files(store) == packs
    assert (store / "manifests" / "second.json").stat().st_size < 4096


def test_a_changed_row_stores_only_its_pages(tmp_path: Path, store: Path) -> None:
    """Changing one row stores a handful of pages; both backups rebuild to their own image."""
    db = make_db(tmp_path / "live.db", wal=False, rows=3000)
    first = db.read_bytes()
    backup(db, store, "before")
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE items SET body = 'changed' WHERE id = 1500")
    conn.close()
    m = backup(db, store, "after")
    assert 1 <= m.stats["pages_new"] <= 5 < m.page_count
    assert rebuilt(store, "before", tmp_path / "out") == first
    assert rebuilt(store, "after", tmp_path / "out") == db.read_bytes()


def test_names_are_checked_and_never_reused(wal_db: Path, store: Path) -> None:
    """A bad name is refused before anything is read; an existing backup is never replaced."""
    with pytest.raises(PageBackupNameError, match=r"'\.\./x'"):
        backup(wal_db, store, "../x")
    backup(wal_db, store, "once")
    with pytest.raises(PageBackupExistsError, match="'once' already exists"):
        backup(wal_db, store, "once")


def test_a_file_that_is_no_database_is_refused(tmp_path: Path, store: Path) -> None:
    """Not a database, or no file at all: one PageReadError naming the file; no backup."""
    bogus = tmp_path / "notes.db"
    bogus.write_text("hello\n" * 1000)
    with pytest.raises(PageReadError, match=r"notes\.db"):
        backup(bogus, store, "x")
    with pytest.raises(PageReadError, match="no such file"):
        backup(tmp_path / "missing.db", store, "x")
    assert not list((store / "manifests").iterdir())


def test_a_planted_link_in_the_store_is_refused(wal_db: Path, store: Path, tmp_path: Path) -> None:
    """The store's manifests directory replaced by a symbolic link: refused, nothing written
    through it."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    store.mkdir(parents=True)
    (store / "manifests").symlink_to(elsewhere)
    with pytest.raises(UnsafeEntryError, match="symbolic link"):
        backup(wal_db, store, "x")
    assert not list(elsewhere.iterdir())


def test_a_store_locked_by_another_operation_is_busy(wal_db: Path, store: Path) -> None:
    """While another process holds the store's lock (a GC, say), a backup waits at most its
    lock timeout, then fails with PageStoreBusyError naming the store; nothing is written."""
    backup(wal_db, store, "first")
    fd = os.open(store / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(PageStoreBusyError, match=r"page store .*pages: still locked"):
            pagestore.create_backup(wal_db, store=store, name="second", now=NOW, lock_timeout_s=0.2)
        with pytest.raises(PageStoreBusyError):
            pagestore.list_backups(store, lock_timeout_s=0.2)
    finally:
        os.close(fd)
    assert not (store / "manifests" / "second.json").exists()
    backup(wal_db, store, "second")


def test_pages_read_by_a_child_process(
    tmp_path: Path, store: Path, writer_process: Callable[..., Writer]
) -> None:
    """``read_in_child``: the read runs in a child process (for a caller that also holds the
    database open through sqlite3, whose locks a second SQLite library would drop). Under a
    live writer the backup is consistent; quiet, it is the file's exact bytes; a file that is
    no database is one PageReadError naming it, with the child's reason."""
    db = make_db(tmp_path / "live.db", wal=False, rows=2000)
    writer = writer_process(db, rate=200)
    pagestore.create_backup(db, store=store, name="busy", now=NOW, read_in_child=True)
    assert writer.stop()["errors"] == 0
    assert _ticks(rebuilt(store, "busy", tmp_path / "out"), tmp_path) >= 1
    pagestore.create_backup(db, store=store, name="quiet", now=NOW, read_in_child=True)
    assert rebuilt(store, "quiet", tmp_path / "out") == db.read_bytes()
    bogus = tmp_path / "notes.db"
    bogus.write_text("hello\n" * 1000)
    with pytest.raises(PageReadError, match=r"notes\.db: cannot read its pages: file is not a"):
        pagestore.create_backup(bogus, store=store, name="x", now=NOW, read_in_child=True)
