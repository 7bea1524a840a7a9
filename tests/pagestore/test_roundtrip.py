"""Property: whatever pages change between backups, every kept backup rebuilds to exactly the
file it was taken of, also after deleting others and collecting garbage."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backup_sidecar import pagestore
from support.databases import make_db
from support.pages import backup, rebuilt

PAGE = 1024

# A page edit: (page number, kind). Kinds 0-2 are fills shared by every page that gets them
# (so the store deduplicates them); kinds 3-7 are bytes of that page alone.
edit = st.tuples(st.integers(min_value=2, max_value=40), st.integers(min_value=0, max_value=7))


def _content(pgno: int, kind: int, step: int) -> bytes:
    if kind < 3:
        return bytes([kind * 85]) * PAGE
    seed = hashlib.sha256(f"{pgno}/{kind}/{step}".encode()).digest()
    return (seed * (PAGE // len(seed) + 1))[:PAGE]


@pytest.mark.slow
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(st.lists(edit, max_size=12), min_size=1, max_size=5),
    dropped=st.sets(st.integers(min_value=0, max_value=4)),
    with_parent=st.booleans(),
)
def test_random_page_edits_round_trip(
    tmp_path_factory: pytest.TempPathFactory,
    steps: list[list[tuple[int, int]]],
    dropped: set[int],
    with_parent: bool,
) -> None:
    """Raw page edits (pages 2..40 of a rollback database, page 1 kept so SQLite opens it) are
    applied, a backup taken after each batch (with or without the previous one as parent, so
    changed pages are deltas of deltas); some backups are deleted and garbage collected; every
    kept one rebuilds byte for byte to the file it was taken of."""
    tmp = tmp_path_factory.mktemp("prop")
    db = make_db(tmp / "live.db", wal=False, rows=1200, page_size=PAGE)
    assert db.stat().st_size >= 40 * PAGE
    store = tmp / "store"
    images: dict[str, bytes] = {}
    for i, batch in enumerate(steps):
        with db.open("r+b") as f:
            for pgno, kind in batch:
                f.seek((pgno - 1) * PAGE)
                f.write(_content(pgno, kind, i))
        m = backup(db, store, f"b{i}", parent=f"b{i - 1}" if i and with_parent else None)
        images[m.name] = db.read_bytes()
        assert m.stats["pages_new"] <= len(batch) + (m.page_count if i == 0 else 0)
    for i in sorted(dropped):
        if f"b{i}" in images:
            pagestore.delete_backup(store, f"b{i}")
            del images[f"b{i}"]
    pagestore.collect_garbage(store)
    for name, image in images.items():
        assert rebuilt(store, name, tmp / "out") == image
