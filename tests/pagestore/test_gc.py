"""Retention of page backups: deleting any backup keeps every page the others need."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from backup_sidecar import pagestore
from backup_sidecar.errors import GarbageCollectionRefusedError, PageBackupNotFoundError
from support.databases import make_db
from support.pages import backup, pack_files, rebuilt


def _edit(db: Path, row: int, body: str) -> None:
    """Rewrite one page-sized row of the index-free ``notes`` table (and so one leaf page)."""
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE notes SET body = ? WHERE id = ?", (body * 300, row))
    conn.close()


def _chain(tmp_path: Path, store: Path) -> tuple[Path, dict[str, bytes]]:
    """base (full), then mid and head that change the same row: head makes mid's page dead."""
    db = make_db(tmp_path / "live.db", wal=False, rows=3000)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.executemany("INSERT INTO notes VALUES (?, ?)", [(i, "n" * 3000) for i in range(50)])
    conn.close()
    images = {}
    for name, body in (("base", None), ("mid", "first edit"), ("head", "second edit")):
        if body:
            _edit(db, 20, body)
        backup(db, store, name)
        images[name] = db.read_bytes()
    return db, images


def test_deleting_the_base_keeps_the_chain_rebuildable(tmp_path: Path, store: Path) -> None:
    """The first (full) backup deleted and garbage collected: its pack stays because the later
    backups still use its unchanged pages, and they rebuild to their exact images."""
    _, images = _chain(tmp_path, store)
    packs = pack_files(store)
    pagestore.delete_backup(store, "base")
    report = pagestore.collect_garbage(store)
    assert report.packs_deleted == () and pack_files(store) == packs
    for name in ("mid", "head"):
        assert rebuilt(store, name, tmp_path / "out") == images[name]


def test_a_middle_backup_deleted_frees_only_its_dead_pages(tmp_path: Path, store: Path) -> None:
    """Deleting the middle backup frees exactly its own pack (the page head replaced), and
    base and head still rebuild."""
    _, images = _chain(tmp_path, store)
    mid_packs = pagestore.list_backups(store)
    (mid,) = [m for m in mid_packs if isinstance(m, pagestore.Manifest) and m.name == "mid"]
    (base,) = [m for m in mid_packs if isinstance(m, pagestore.Manifest) and m.name == "base"]
    only_mid = mid.packs - base.packs
    assert len(only_mid) == 1
    pagestore.delete_backup(store, "mid")
    report = pagestore.collect_garbage(store)
    assert set(report.packs_deleted) == only_mid and report.bytes_freed > 0
    for name in ("base", "head"):
        assert rebuilt(store, name, tmp_path / "out") == images[name]


def test_deleting_every_backup_frees_every_pack(tmp_path: Path, store: Path) -> None:
    """With no manifest left, GC sweeps all packs and leftover temporary files."""
    _chain(tmp_path, store)
    (store / "packs" / ".tmp-deadbeef").write_bytes(b"half a pack")
    for name in ("base", "mid", "head"):
        pagestore.delete_backup(store, name)
    report = pagestore.collect_garbage(store)
    assert report.temps_removed == 1 and report.packs_kept == 0
    assert list((store / "packs").iterdir()) == []
    with pytest.raises(PageBackupNotFoundError):
        pagestore.delete_backup(store, "head")


def test_an_unreadable_manifest_stops_the_sweep(tmp_path: Path, store: Path) -> None:
    """A manifest that cannot be parsed might name any pack: GC refuses, naming it, and
    deletes nothing, even packs no readable manifest names."""
    _chain(tmp_path, store)
    pagestore.delete_backup(store, "mid")
    packs = pack_files(store)
    (store / "manifests" / "broken.json").write_text("{not json")
    with pytest.raises(GarbageCollectionRefusedError, match="'broken'"):
        pagestore.collect_garbage(store)
    assert pack_files(store) == packs
