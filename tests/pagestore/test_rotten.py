"""A pack found damaged is never named again: the next backup stores its pages anew."""

from __future__ import annotations

from pathlib import Path

import pytest

from backup_sidecar import pagestore
from backup_sidecar.errors import PageMismatchError
from support.databases import make_db
from support.pages import backup, rebuilt


def test_a_backup_after_damage_was_found_stores_the_damaged_pages_again(
    tmp_path: Path, store: Path
) -> None:
    """Once a rebuild found a pack damaged (a byte of its first frame flipped), the next backup
    of the unchanged database names no page of that pack (nor builds a delta on one): it
    stores them again and rebuilds to the live image, though its parent stays broken. The GC
    drops the mark with the pack."""
    db = make_db(tmp_path / "live.db", wal=False, rows=1500)
    backup(db, store, "b0")
    (pack,) = (store / "packs").glob("*.pack")
    raw = bytearray(pack.read_bytes())
    raw[200] ^= 0xFF
    pack.write_bytes(bytes(raw))
    mark = store / "packs" / f"{pack.stem}.damaged"
    with pytest.raises(PageMismatchError):
        rebuilt(store, "b0", tmp_path / "out")
    assert mark.is_file()
    m = backup(db, store, "b1", parent="b0")
    assert pack.stem not in m.packs and m.stats["pages_new"] > 0
    assert m.stats["pages_delta"] == 0
    assert rebuilt(store, "b1", tmp_path / "out") == db.read_bytes()
    pagestore.delete_backup(store, "b0")
    report = pagestore.collect_garbage(store)
    assert pack.stem in report.packs_deleted
    assert not mark.exists()
