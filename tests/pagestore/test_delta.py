"""Changed pages stored as deltas of the parent backup's page, and the GC that keeps bases."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from backup_sidecar import pagestore
from backup_sidecar.pagestore.packformat import MAX_DEPTH
from conftest import make_db
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
    """base -> mid -> head, mid and head changing the same pages: head's deltas are built on
    mid's pack, which head's manifest does not name. Deleting mid keeps that pack (GC follows
    the bases); deleting head too lets it go."""
    db = _db(tmp_path)
    backup(db, store, "base")
    before = pack_files(store)
    _edit(db, 1)
    backup(db, store, "mid", parent="base")
    mid_packs = pack_files(store) - before
    _edit(db, 2)
    head = backup(db, store, "head", parent="mid")
    image = db.read_bytes()
    assert not {f"{p}.pack" for p in head.packs} & mid_packs
    pagestore.delete_backup(store, "mid")
    assert pagestore.collect_garbage(store).packs_deleted == ()
    assert rebuilt(store, "head", tmp_path / "out") == image
    pagestore.delete_backup(store, "head")
    report = pagestore.collect_garbage(store)
    assert {f"{p}.pack" for p in report.packs_deleted} >= mid_packs
    assert rebuilt(store, "base", tmp_path / "out")


def test_delta_chains_stop_at_the_depth_limit(tmp_path: Path, store: Path) -> None:
    """A page changed in every backup of a long chain is stored whole again once its chain
    would pass MAX_DEPTH, and every backup of the chain rebuilds."""
    db = _db(tmp_path)
    backup(db, store, "b0")
    images = {"b0": db.read_bytes()}
    deltas = []
    for i in range(1, MAX_DEPTH + 3):
        _edit(db, i)
        m = backup(db, store, f"b{i}", parent=f"b{i - 1}")
        deltas.append(m.stats["pages_delta"] == m.stats["pages_new"])
        images[m.name] = db.read_bytes()
    assert deltas[: MAX_DEPTH - 1] == [True] * (MAX_DEPTH - 1)
    assert False in deltas[MAX_DEPTH - 1 :]
    for name, image in images.items():
        assert rebuilt(store, name, tmp_path / "out") == image
