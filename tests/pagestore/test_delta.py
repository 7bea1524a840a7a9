"""Changed pages stored as deltas of the parent backup's page, and the GC that keeps bases."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

from backup_sidecar import pagestore
from backup_sidecar.pagestore.packformat import read_index
from support.databases import make_db
from support.pages import backup, pack_files, rebuilt


def _hex(i: int, j: int) -> str:
    return hashlib.sha256(f"{i}-{j}".encode()).hexdigest()


def _db(tmp_path: Path) -> Path:
    """A database of page-sized rows of hex text (it compresses like real data, not like a
    repeated word), so an edit changes a few bytes of a page."""
    db = make_db(tmp_path / "live.db", wal=False, rows=10)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        rows = [(i, " ".join(_hex(i, j) for j in range(60))) for i in range(200)]
        conn.executemany("INSERT INTO notes VALUES (?, ?)", rows)
    conn.close()
    return db


def _edit(db: Path, step: int) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "UPDATE notes SET body = substr(body, 1, 1000) || ? || substr(body, 1006) "
            "WHERE id % 20 = 0",
            (f"{step:05d}",),
        )
    conn.close()


def test_a_changed_page_is_stored_as_a_small_delta(tmp_path: Path, store: Path) -> None:
    """With the previous backup as parent, pages changed by a few bytes are deltas, several
    times smaller than the same backup stored without a parent; both rebuild exactly."""
    db = _db(tmp_path)
    other = tmp_path / "other"
    backup(db, store, "base")
    backup(db, other, "base")
    _edit(db, 1)
    plain = backup(db, other, "plain")
    delta = backup(db, store, "delta", parent="base")
    assert delta.stats["pages_new"] == plain.stats["pages_new"] >= 10
    assert delta.stats["pages_delta"] >= 10
    assert delta.stats["bytes_stored"] * 4 < plain.stats["bytes_stored"]
    assert delta.metadata["parent"] == "base"
    assert rebuilt(store, "delta", tmp_path / "out") == db.read_bytes()


def test_gc_keeps_the_bases_of_kept_deltas(tmp_path: Path, store: Path) -> None:
    """mid adds a one-page table (a new page: stored whole, in a pack of its own); head
    changes that page (a delta on it), so head's manifest does not name that pack, only its
    delta does. Deleting mid sweeps mid's own deltas but keeps that pack (GC follows the
    bases); deleting head lets it go."""
    db = _db(tmp_path)
    backup(db, store, "base")
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("CREATE TABLE extra (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO extra VALUES (1, ?)", (_hex(0, 0) * 40,))
    before = pack_files(store)
    mid = backup(db, store, "mid", parent="base")
    with conn:
        conn.execute("UPDATE extra SET body = 'x' || substr(body, 2)")
    conn.close()
    head = backup(db, store, "head", parent="mid")
    image = db.read_bytes()
    mid_only = {f"{p}.pack" for p in mid.packs} - {f"{p}.pack" for p in head.packs} - before
    assert mid_only and head.stats["pages_delta"] >= 1
    pagestore.delete_backup(store, "mid")
    swept = {f"{p}.pack" for p in pagestore.collect_garbage(store).packs_deleted}
    assert swept < mid_only  # mid's own deltas go; the whole page head's delta needs stays
    assert rebuilt(store, "head", tmp_path / "out") == image
    pagestore.delete_backup(store, "head")
    report = pagestore.collect_garbage(store)
    assert {f"{p}.pack" for p in report.packs_deleted} >= mid_only - swept
    assert rebuilt(store, "base", tmp_path / "out")


def test_a_chain_of_deltas_stays_one_level_deep(tmp_path: Path, store: Path) -> None:
    """Pages changed in every backup of a chain of 12 are deltas in every one of them, each
    built on the whole page (depth 1, never a delta of a delta, so a rebuild never fans out
    through chains of frames), and every backup of the chain rebuilds."""
    db = _db(tmp_path)
    backup(db, store, "b0")
    images = {"b0": db.read_bytes()}
    for i in range(1, 12):
        _edit(db, i)
        m = backup(db, store, f"b{i}", parent=f"b{i - 1}")
        assert m.stats["pages_delta"] >= 10
        images[m.name] = db.read_bytes()
    depths = set()
    for pack in (store / "packs").glob("*.pack"):
        idx = read_index(os.open(pack.parent, os.O_RDONLY), pack.stem, where=pack.parent)
        depths |= {f.depth for f in idx.frames}
    assert depths == {0, 1}
    for name, image in images.items():
        assert rebuilt(store, name, tmp_path / "out") == image
