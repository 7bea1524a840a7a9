"""The store's briefs (pagestore/briefs.py): the same listing as the manifests parsed in full,
whatever happened to the manifests or to the cache file since it was written."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine

from backup_sidecar import pagestore
from backup_sidecar.errors import ManifestFormatError
from backup_sidecar.pagestore import briefs
from backup_sidecar.pagestore.manifest import parse_manifest
from support.databases import make_db
from support.pages import backup, load

Listing = list[tuple[str, object]]


@pytest.fixture
def chain(tmp_path: Path, store: Path) -> Path:
    """A store with three backups of a changing database, each the parent of the next."""
    db = make_db(tmp_path / "live.db", wal=True, rows=500)
    parent = None
    for i in range(3):
        with contextlib.closing(sqlite3.connect(db)) as conn, conn:
            conn.execute("INSERT INTO items(body) VALUES (?)", (f"more-{i}",))
        parent = backup(db, store, f"b{i}", parent=parent).name
    return store


@pytest.fixture(autouse=True)
def later() -> Iterator[None]:
    """Listings a minute after the backups: none of them is too young to be cached."""
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=1), tick=True):
        yield


@pytest.fixture(autouse=True)
def new_process() -> Iterator[None]:
    """Each test starts with no cache in memory (as a new CLI process does)."""
    briefs._memo.clear()
    yield
    briefs._memo.clear()


def full(store: Path) -> Listing:
    """The listing from every manifest parsed in full (no cache involved)."""
    return [
        (e.name, str(e) if isinstance(e, ManifestFormatError) else pagestore.Brief.of(e))
        for e in pagestore.list_backups(store)
    ]


def brief(store: Path, problems: list[str] | None = None) -> Listing:
    found = pagestore.list_briefs(
        store, on_problem=(problems if problems is not None else []).append
    )
    return [(e.name, str(e) if isinstance(e, ManifestFormatError) else e) for e in found]


def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the manifests parsed from now on (a spy on the parser)."""
    seen: list[str] = []

    def spy(name: str, data: bytes) -> pagestore.Manifest:
        seen.append(name)
        return parse_manifest(name, data)

    monkeypatch.setattr(briefs, "parse_manifest", spy)
    return seen


def test_briefs_are_the_manifests_cold_warm_and_from_disk(
    chain: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a cache, from the cache file in a new process, and from memory: the same
    entries as every manifest parsed in full; the last two parse none."""
    expected = full(chain)
    assert [n for n, _ in expected] == ["b0", "b1", "b2"]
    assert brief(chain) == expected  # builds the cache
    assert (chain / briefs.CACHE).is_file()
    briefs._memo.clear()
    seen = parses(monkeypatch)
    assert brief(chain) == expected  # from the file
    assert brief(chain) == expected  # from memory
    assert seen == []


def _delete(m: Path) -> None:
    m.unlink()


def _replace(m: Path) -> None:
    """Another valid manifest under the same name (a new file renamed over it)."""
    old = parse_manifest(m.stem, m.read_bytes())
    new = dataclasses.replace(old, metadata={**old.metadata, "policy": "other"})
    tmp = m.with_suffix(".new")
    tmp.write_bytes(new.to_bytes())
    tmp.replace(m)


def _corrupt_in_place(m: Path) -> None:
    """One byte changed in place, same size, mtime set back: only the ctime tells."""
    st = m.stat()
    data = bytearray(m.read_bytes())
    data[data.index(b'"image_sha256":"') + 16] ^= 0x01
    m.chmod(0o600)
    with m.open("r+b") as f:
        f.write(data)
    os.utime(m, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("change", [_delete, _replace, _corrupt_in_place])
def test_a_manifest_changed_outside_the_sidecar_is_read_again(
    chain: Path, change: Callable[[Path], None]
) -> None:
    """Deleted, replaced by another valid manifest, or damaged in place with its mtime put
    back: the next listing (a new process, the cache on disk) is the manifests' own."""
    brief(chain)
    change(chain / "manifests" / "b1.json")
    briefs._memo.clear()
    now = full(chain)
    assert brief(chain) == now
    listed = dict(now)
    if change is _delete:
        assert "b1" not in listed
    elif change is _replace:
        assert isinstance(listed["b1"], pagestore.Brief)
        assert listed["b1"].metadata["policy"] == "other"
    else:
        assert "image_sha256" in str(listed["b1"])


def _garbage(c: Path) -> None:
    c.write_bytes(b"\x00not a cache at all")


def _truncated(c: Path) -> None:
    c.write_bytes(c.read_bytes()[:-40])


def _flipped(c: Path) -> None:
    data = bytearray(c.read_bytes())
    data[-30] ^= 0x04
    c.write_bytes(bytes(data))


def _wrong_shape(c: Path) -> None:
    """Hostile: a checksum that matches a body of the wrong shape."""
    body = b'{"packs":["x"],"entries":{"b1.json":[[1,2,3,4],{"name":"b1","packs":[-1]}]}}'
    c.write_bytes(
        b"backup-sidecar-briefs 1 " + hashlib.sha256(body).hexdigest().encode() + b"\n" + body
    )


def _a_link(c: Path) -> None:
    """A link to a copy of the cache made before the damage (it would hide it if followed)."""
    saved = c.with_name("saved-cache")
    saved.write_bytes(c.read_bytes())
    c.unlink()
    c.symlink_to(saved)


@pytest.mark.parametrize("spoil", [_garbage, _truncated, _flipped, _wrong_shape, _a_link])
def test_a_spoilt_cache_never_hides_a_damaged_manifest(
    chain: Path, spoil: Callable[[Path], None]
) -> None:
    """A manifest damaged after the cache was written, then the cache spoilt (garbage,
    truncated, a flipped byte, a hostile body, a link): the listing names the damage, the
    cache is reported ignored in one line (never an exception), and written anew."""
    brief(chain)
    cache = chain / briefs.CACHE
    cache.chmod(0o600)
    spoil(cache)
    (chain / "manifests" / "b2.json").write_bytes(b"{nope")
    briefs._memo.clear()
    problems: list[str] = []
    listed = dict(brief(chain, problems))
    assert "malformed" in str(listed["b2"])
    assert brief(chain) == full(chain)
    assert len(problems) == 1 and "ignored" in problems[0] and str(cache) in problems[0]
    assert cache.is_file() and not cache.is_symlink()
    if spoil is _a_link:
        assert (chain / "saved-cache").read_bytes().startswith(b"backup-sidecar-briefs 1 ")


def test_a_manifest_younger_than_a_second_is_read_again(
    tmp_path: Path, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manifest written within a second of the listing is not cached (its timestamps could
    still match a rewrite in the same clock tick): the next listing parses it again."""
    db = make_db(tmp_path / "live.db", wal=True, rows=50)
    backup(db, store, "old")
    brief(store)
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=2), tick=True):
        young = backup(db, store, "young", parent="old")
        st = (store / "manifests" / "young.json").stat()
        with time_machine.travel(datetime.fromtimestamp(st.st_ctime, UTC), tick=False):
            briefs._memo.clear()
            seen = parses(monkeypatch)
            assert brief(store) == full(store)
            assert brief(store) == full(store)
            assert seen.count("young") == 2 and "old" not in seen
    assert load(store, "young") == young
