"""Property: any damage to a pack or a manifest makes a rebuild fail with one page store error
(or, if the damage changed no byte that matters, rebuild the exact image), never another
exception, never a partial output file; GC then either sweeps or refuses, naming why."""

from __future__ import annotations

import shutil
import sqlite3
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backup_sidecar import pagestore
from backup_sidecar.errors import (
    GarbageCollectionRefusedError,
    PageMismatchError,
    PageStoreError,
)
from backup_sidecar.pagestore.packformat import FOOTER, HEAD, zstd
from support.databases import make_db
from support.pages import backup


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """A store with a full backup and a delta backup of it, and their images."""
    tmp = tmp_path_factory.mktemp("pristine")
    db = make_db(tmp / "live.db", wal=False, rows=1500)
    store = tmp / "store"
    backup(db, store, "base")
    images = {"base": db.read_bytes()}
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE items SET body = body || 'x' WHERE id % 50 = 0")
        conn.executemany("INSERT INTO items(body) VALUES (?)", [(f"new {i}",) for i in range(300)])
    conn.close()
    m = backup(db, store, "next", parent="base")
    assert m.stats["pages_delta"] > 0
    images["next"] = db.read_bytes()
    return store, images


@pytest.mark.slow
@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_damaged_store_files_fail_cleanly(
    pristine: tuple[Path, dict[str, bytes]],
    tmp_path_factory: pytest.TempPathFactory,
    data: st.DataObject,
) -> None:
    """Flip, truncate or append bytes in one pack or manifest (hypothesis picks which, where
    and how): each backup rebuilds to its exact image or raises a PageStoreError; no output
    file is left on failure; a GC completes or refuses with GarbageCollectionRefusedError."""
    source, images = pristine
    tmp = tmp_path_factory.mktemp("damaged")
    store = tmp / "store"
    shutil.copytree(source, store)
    files = sorted(p for d in ("packs", "manifests") for p in (store / d).iterdir())
    victim = data.draw(st.sampled_from(files))
    raw = bytearray(victim.read_bytes())
    how = data.draw(st.sampled_from(["flip", "truncate", "append"]))
    # Anywhere, or in the last 300 bytes: a pack's index and footer, a manifest's runs.
    tail = st.integers(min_value=max(0, len(raw) - 300), max_value=len(raw) - 1)
    at = data.draw(st.one_of(st.integers(min_value=0, max_value=len(raw) - 1), tail))
    if how == "flip":
        raw[at] ^= data.draw(st.integers(min_value=1, max_value=255))
    elif how == "truncate":
        del raw[at:]
    else:
        raw += data.draw(st.binary(min_size=1, max_size=64))
    victim.write_bytes(bytes(raw))
    for name, image in images.items():
        out = tmp / f"{name}.db"
        try:
            pagestore.rebuild(store, name, out=out)
        except PageStoreError as exc:
            assert "\n" not in str(exc)
            assert not out.exists()
        else:
            assert out.read_bytes() == image
    try:
        pagestore.collect_garbage(store)
    except GarbageCollectionRefusedError as exc:
        assert "\n" not in str(exc)


def _rewrite_index(pack: Path, edit: Callable[[bytearray], None]) -> None:
    """Decompress the pack's index, ``edit`` it, and write it back well-compressed, so that
    the index parser itself (not zstd) meets the damage."""
    data = pack.read_bytes()
    offset, length, magic = FOOTER.unpack(data[-FOOTER.size :])
    raw = bytearray(zstd.decompress(data[offset : offset + length]))
    edit(raw)
    index = zstd.compress(bytes(raw))
    pack.write_bytes(data[:offset] + index + FOOTER.pack(offset, len(index), magic))


def _set(
    fmt: str, at: Callable[[bytearray], int], value: Callable[[int], int]
) -> Callable[[bytearray], None]:
    def edit(raw: bytearray) -> None:
        pos = at(raw)
        (old,) = struct.unpack_from(fmt, raw, pos)
        struct.pack_into(fmt, raw, pos, value(old))

    return edit


def _first_frame(raw: bytearray) -> int:
    return HEAD.size + 16 * int(HEAD.unpack_from(raw)[4])


INDEX_DAMAGE = {
    "one slot more": _set("<I", lambda r: 8, lambda v: v + 1),
    "one frame more": _set("<I", lambda r: 12, lambda v: v + 1),
    "page size 100": _set("<I", lambda r: 4, lambda v: 100),
    "frame past the data": _set("<Q", _first_frame, lambda v: v + (1 << 40)),
    "frame of 0 pages": _set("<I", lambda r: _first_frame(r) + 16, lambda v: 0),
    "whole frame with depth 3": _set("<B", lambda r: _first_frame(r) + 21, lambda v: 3),
    "unknown frame kind": _set("<B", lambda r: _first_frame(r) + 20, lambda v: 7),
    "slot naming base pack 9": _set("<i", lambda r: len(r) - 8, lambda v: 9),
    "one byte short": lambda r: r.__delitem__(slice(-1, None)),
    "magic": lambda r: r.__setitem__(slice(0, 4), b"XIDX"),
}


@pytest.mark.parametrize("damage", sorted(INDEX_DAMAGE))
def test_a_malformed_pack_index_is_one_clear_error(
    pristine: tuple[Path, dict[str, bytes]], tmp_path: Path, damage: str
) -> None:
    """A pack index that decompresses but breaks the format (counts, offsets, kinds, depths,
    base numbers) fails the rebuild with one PageMismatchError naming the damaged pack."""
    source, _ = pristine
    store = tmp_path / "store"
    shutil.copytree(source, store)
    pack = max((store / "packs").glob("*.pack"), key=lambda p: p.stat().st_size)
    _rewrite_index(pack, INDEX_DAMAGE[damage])
    with pytest.raises(PageMismatchError, match=rf"pack '{pack.stem}' is damaged"):
        pagestore.rebuild(store, "base", out=tmp_path / "out.db")
    assert not (tmp_path / "out.db").exists()
