"""An unchanged database costs a read and a hash of its pages: the parent's check stands for
an identical image, and no page is fetched or stored; anything else runs the check again."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest
import sqlean

from backup_sidecar import pagestore
from backup_sidecar.errors import PageReadError
from backup_sidecar.pagestore.checking import reused_check
from backup_sidecar.pagestore.snapshot import LocalSnapshot
from support.databases import make_db
from support.pages import NOW


def _backup(
    db: Path,
    store: Path,
    name: str,
    *,
    parent: str | None = None,
    check: str = "full",
    read_in_child: bool = False,
    reuse_check: bool = True,
) -> pagestore.Manifest:
    return pagestore.create_backup(
        db,
        store=store,
        name=name,
        now=NOW,
        parent=parent,
        check=check,
        read_in_child=read_in_child,
        reuse_check=reuse_check,
    )


@pytest.mark.parametrize("in_child", [True, False], ids=["child", "in-process"])
def test_an_unchanged_database_takes_its_parents_check_and_stores_nothing(
    tmp_path: Path, store: Path, in_child: bool
) -> None:
    """The second backup of an unchanged database records the first one's passed check, row
    counts and schema hash, names the backup whose transaction ran the check (`check_of`),
    stores no page and rebuilds to the same image; the third names the first one too."""
    db = make_db(tmp_path / "live.db", wal=True, rows=3000)
    first = _backup(db, store, "b0", read_in_child=in_child)
    second = _backup(db, store, "b1", parent="b0", read_in_child=in_child)
    third = _backup(db, store, "b2", parent="b1", read_in_child=in_child)
    assert "check_of" not in first.metadata
    assert second.metadata["check_of"] == third.metadata["check_of"] == "b0"
    for m in (second, third):
        assert (m.metadata["check"], m.metadata["integrity_check"]) == ("full", "ok")
        assert m.metadata["row_counts"] == first.metadata["row_counts"] == {"items": 3000}
        assert m.metadata["schema_sha256"] == first.metadata["schema_sha256"]
        assert m.image_sha256 == first.image_sha256
        assert (m.stats["pages_new"], m.stats["bytes_stored"]) == (0, 0)


def test_a_changed_database_runs_its_check_and_fetches_only_new_pages(
    tmp_path: Path, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After one row changes, the backup runs the check again (no `check_of`, the new row
    count) and asks the read transaction for the changed pages only, not the whole image."""
    db = make_db(tmp_path / "live.db", wal=True, rows=3000)
    _backup(db, store, "b0", read_in_child=False)
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO items(body) VALUES ('one more')")
    asked: list[int] = []
    pages = LocalSnapshot.pages

    def spy(self: LocalSnapshot, pgnos: list[int]):  # type: ignore[no-untyped-def]
        asked.extend(pgnos)
        return pages(self, pgnos)

    monkeypatch.setattr(LocalSnapshot, "pages", spy)
    m = _backup(db, store, "b1", parent="b0", read_in_child=False)
    assert "check_of" not in m.metadata
    assert m.metadata["row_counts"] == {"items": 3001}
    assert 0 < len(asked) == m.stats["pages_new"] < m.page_count // 4


def test_a_database_damaged_after_a_passing_backup_fails_its_next_check(
    tmp_path: Path, store: Path
) -> None:
    """Bytes overwritten in the file after a backup passed make another image: the check runs
    on it and fails the backup, naming the file, as if there had been no parent."""
    db = make_db(tmp_path / "live.db", wal=False, rows=2000)
    _backup(db, store, "b0", check="quick", read_in_child=True)
    with sqlite3.connect(db) as conn:
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name='items_body'"
        ).fetchone()
    with db.open("r+b") as f:
        f.seek((root - 1) * 4096)
        f.write(b"\xff" * 4096)
    with pytest.raises(PageReadError, match=r"live\.db.*quick_check"):
        _backup(db, store, "b1", parent="b0", check="quick", read_in_child=True)


def test_a_parents_check_stands_only_if_it_passed_covers_the_check_and_ran_here(
    tmp_path: Path, store: Path
) -> None:
    """A quick check does not stand for a full one (the other way round it does); nor a
    result other than ok, a check run by another SQLite version, a parent missing a fact,
    another image, or `reuse_check=False` (the caller's parent is marked damaged)."""
    db = make_db(tmp_path / "live.db", wal=True, rows=500)
    quick = _backup(db, store, "q", check="quick")
    full = _backup(db, store, "f", parent="q", check="full")
    assert "check_of" not in full.metadata  # quick did not stand for full
    assert reused_check(full, full.image_sha256, "quick") is not None
    assert reused_check(quick, quick.image_sha256, "full") is None
    meta = dict(full.metadata)
    assert reused_check(full, full.image_sha256, "full") is not None
    for wrong in ({"integrity_check": "row 3 missing from index"}, {"sqlite_version": "3.0.0"}):
        other = dataclasses.replace(full, metadata={**meta, **wrong})
        assert reused_check(other, full.image_sha256, "full") is None
    missing = {k: v for k, v in meta.items() if k != "row_counts"}
    assert (
        reused_check(dataclasses.replace(full, metadata=missing), full.image_sha256, "full") is None
    )
    assert reused_check(full, "0" * 64, "full") is None
    again = _backup(db, store, "g", parent="f", reuse_check=False)
    assert "check_of" not in again.metadata
    assert full.metadata["sqlite_version"] == sqlean.sqlite_version
