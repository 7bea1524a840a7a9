"""The reader child's cheaper reads (memory-mapped) keep every backup the snapshot it read."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backup_sidecar import pagestore
from backup_sidecar.errors import PageReadError
from backup_sidecar.pagestore import backup as backup_module
from backup_sidecar.pagestore.reader import read_pages
from backup_sidecar.pagestore.readproc import ChildSnapshot, snapshot_in_child
from support.databases import Writer, make_db
from support.pages import NOW, rebuilt


def _image(db: Path) -> bytes:
    """The database's image now, read in one read transaction (in this process, no map)."""
    with read_pages(db) as (_, pages):
        return b"".join(pages)


def _ticks(image: bytes, tmp_path: Path) -> int:
    """Commits in the image (the writer's `ticks` rows); the image must pass integrity_check."""
    path = tmp_path / "image.db"
    path.write_bytes(image)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return int(conn.execute("SELECT count(*) FROM ticks").fetchone()[0])
    finally:
        conn.close()
        path.unlink()


def _shrinkable(path: Path, *, wal: bool) -> Path:
    """A database with most of its rows deleted (a VACUUM shrinks it)."""
    db = make_db(path, wal=wal, rows=4000)
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM items WHERE id % 8 != 0")
    conn.commit()
    conn.close()
    return db


def test_reader_child_maps_the_database_file(tmp_path: Path) -> None:
    """The reader child reads the main file through a memory map (docs/pagestore.md, run H:
    the pages and the check without a pread copy each): while it holds its read transaction
    the database file is mapped in its address space, and the pages it sends are the file's."""
    db = make_db(tmp_path / "live.db", wal=False, rows=3000)
    with snapshot_in_child(db) as snap:
        digests, image = snap.digests()
        maps = Path(f"/proc/{snap.pid}/maps").read_text()
        pages = list(snap.pages(list(range(1, snap.info.page_count + 1))))
    assert str(db.resolve()) in maps
    assert b"".join(pages) == db.read_bytes()
    assert image == hashlib.sha256(db.read_bytes()).hexdigest()
    assert digests == [hashlib.sha256(p).digest() for p in pages]


def test_mapped_reader_keeps_its_snapshot_through_vacuum_and_checkpoints(tmp_path: Path) -> None:
    """WAL mode: while the child holds its read transaction (pages from the map and from the
    WAL), the application commits, VACUUMs and asks for wal_checkpoint(TRUNCATE). The file is
    never cut below the child's snapshot (SQLite's checkpoint stops at the reader's mark), so
    the child's pages are still exactly the image of its transaction; once it ends, the
    checkpoint shrinks the file and a new read sees the vacuumed image."""
    db = _shrinkable(tmp_path / "live.db", wal=True)
    app = sqlite3.connect(db, isolation_level=None, timeout=0)
    app.execute("PRAGMA wal_autocheckpoint=0")
    app.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    app.execute("UPDATE items SET body = body || '-x' WHERE id % 64 = 0")  # frames in the WAL
    before = _image(db)
    size_before = db.stat().st_size
    with snapshot_in_child(db) as snap:
        assert snap.info.page_count * snap.info.page_size == len(before)
        app.execute("INSERT INTO items(body) VALUES ('after the snapshot')")
        app.execute("VACUUM")
        busy, _, _ = app.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 1  # the child's read mark holds the checkpoint back
        assert db.stat().st_size == size_before
        digests, image = snap.digests()
        pages = b"".join(snap.pages(list(range(1, snap.info.page_count + 1))))
    assert pages == before
    assert image == hashlib.sha256(before).hexdigest()
    assert digests[0] == hashlib.sha256(before[: snap.info.page_size]).digest()
    assert app.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    app.close()
    assert db.stat().st_size < size_before
    with snapshot_in_child(db) as snap:
        _, image = snap.digests()
    assert image == hashlib.sha256(_image(db)).hexdigest()


_APP_STEPS = {
    "insert": "INSERT INTO items(body) SELECT body || '-n' FROM items WHERE id % 7 = 0",
    "update": "UPDATE items SET body = body || '-u' WHERE id % 5 = 0",
    "delete": "DELETE FROM items WHERE id % 3 = 0",
    "vacuum": "VACUUM",
    "passive": "PRAGMA wal_checkpoint(PASSIVE)",
    "full": "PRAGMA wal_checkpoint(FULL)",
    "restart": "PRAGMA wal_checkpoint(RESTART)",
    "truncate": "PRAGMA wal_checkpoint(TRUNCATE)",
}
_STEPS = st.lists(st.sampled_from(sorted(_APP_STEPS)), max_size=6)


@settings(max_examples=8, deadline=None, derandomize=True, database=None)
@given(before=_STEPS, during=_STEPS)
def test_any_writes_and_checkpoints_leave_the_mapped_snapshot_whole(
    before: list[str], during: list[str]
) -> None:
    """Property (WAL mode): whatever the application commits, VACUUMs and checkpoints
    before the child's read transaction (so its snapshot holds WAL frames, or none) and while
    it is open, the child's digests and image SHA-256 are those of the image as it was when
    the transaction began, and a read after it ends sees the application's last commit."""
    with tempfile.TemporaryDirectory() as tmp:
        db = _shrinkable(Path(tmp) / "live.db", wal=True)
        app = sqlite3.connect(db, isolation_level=None, timeout=0)
        app.execute("PRAGMA wal_autocheckpoint=0")
        for step in before:
            app.execute(_APP_STEPS[step]).fetchall()
        image = _image(db)
        with snapshot_in_child(db) as snap:
            for step in during:
                app.execute(_APP_STEPS[step]).fetchall()  # checkpoints: busy, never an error
            digests, sha = snap.digests()
        size = snap.info.page_size
        assert sha == hashlib.sha256(image).hexdigest()
        assert digests == [
            hashlib.sha256(image[i : i + size]).digest() for i in range(0, len(image), size)
        ]
        with snapshot_in_child(db) as snap:
            _, sha = snap.digests()
        assert sha == hashlib.sha256(_image(db)).hexdigest()
        app.close()


@pytest.mark.parametrize("wal", [True, False], ids=["wal", "rollback"])
def test_chain_under_a_writer_with_vacuum_and_checkpoints_rebuilds_each_snapshot(
    tmp_path: Path, writer_process: Callable[..., Writer], wal: bool
) -> None:
    """A chain of incrementals (each the next one's parent, `check: quick`, read by the
    child) while a real writer process commits 200 rows a second, and between backups the
    application checkpoints (TRUNCATE), VACUUMs and deletes: every backup rebuilds to an
    image whose SHA-256 is the manifest's, that passes integrity_check and holds between the
    commits counted before and after its read; a quiet database's backup is its file."""
    db = _shrinkable(tmp_path / "live.db", wal=wal)
    store = tmp_path / "backups" / "pages"
    writer = writer_process(db, rate=200)
    app = sqlite3.connect(db, isolation_level=None, timeout=30)
    parent = None
    steps = [
        "PRAGMA wal_checkpoint(TRUNCATE)",
        "VACUUM",
        "DELETE FROM items WHERE id % 16 = 0",
        "PRAGMA wal_checkpoint(PASSIVE)",
        "VACUUM",
        "PRAGMA wal_checkpoint(TRUNCATE)",
    ]
    for i, step in enumerate(steps):
        app.execute(step).fetchall()
        low = writer.committed()
        m = pagestore.create_backup(
            db,
            store=store,
            name=f"b{i}",
            now=NOW,
            parent=parent,
            read_in_child=True,
            check="quick",
        )
        high = writer.committed()
        image = rebuilt(store, m.name, tmp_path / "out")
        assert low - 1 <= _ticks(image, tmp_path) <= high + 1
        assert m.metadata["integrity_check"] == "ok"
        parent = m.name
    assert writer.stop()["errors"] == 0
    if wal:
        app.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    app.close()
    last = pagestore.create_backup(
        db, store=store, name="quiet", now=NOW, parent=parent, read_in_child=True
    )
    assert rebuilt(store, last.name, tmp_path / "out") == db.read_bytes()


def test_a_reader_child_killed_by_a_signal_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader child that dies of a signal (a SIGBUS from the mapped file cut short by
    something other than SQLite) fails the backup as one PageReadError naming the database
    and the signal, and stores nothing."""
    db = make_db(tmp_path / "live.db", wal=False, rows=500)
    store = tmp_path / "backups" / "pages"

    @contextlib.contextmanager
    def killed(db: Path, *, busy_timeout_s: float = 30.0) -> Iterator[ChildSnapshot]:
        with snapshot_in_child(db, busy_timeout_s=busy_timeout_s) as snap:
            os.kill(snap.pid, signal.SIGBUS)
            yield snap

    monkeypatch.setattr(backup_module, "snapshot_in_child", killed)
    with pytest.raises(PageReadError, match=r"live\.db: .*killed by signal SIGBUS"):
        pagestore.create_backup(db, store=store, name="b", now=NOW, read_in_child=True)
    assert not list((store / "manifests").glob("*.json"))
