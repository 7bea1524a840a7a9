"""The GC's cost (docs/pagestore.md run I): the sweep reads the store's briefs, never the
manifests' runs; the prune's repack pass (which parses every manifest) runs only when the
bytes the deleted backups stored reach a tenth of the store's (pagestore/repackdue.py); a
repack caches the briefs of the manifests it rewrote. Every kept backup rebuilds throughout."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine

from backup_sidecar import pagestore
from backup_sidecar.pagestore import briefs, fsio
from backup_sidecar.pagestore.manifest import parse_manifest
from backup_sidecar.pagestore.repackdue import DEBT, REPACK_WHEN, read_debt
from support.pages import hot_chain, rebuilt


@pytest.fixture(autouse=True)
def later() -> Iterator[None]:
    """GCs a minute after the backups: none of them is too young to be cached."""
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=1), tick=True):
        yield


@pytest.fixture(autouse=True)
def new_process() -> Iterator[None]:
    """Each test starts with no cache in memory (as a new CLI process does)."""
    briefs._memo.clear()
    yield
    briefs._memo.clear()


def _parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the manifests parsed from now on (a spy on the parser, wherever the
    page store calls it)."""
    seen: list[str] = []

    def spy(name: str, data: bytes) -> pagestore.Manifest:
        seen.append(name)
        return parse_manifest(name, data)

    for module in ("briefs", "rebuild", "repack"):  # by path: rebuild is also a function
        monkeypatch.setattr(
            sys.modules[f"backup_sidecar.pagestore.{module}"], "parse_manifest", spy
        )
    return seen


def _debt(store: Path) -> int | None:
    with fsio.open_store(store, exclusive=False, timeout_s=5) as dirs:
        return read_debt(dirs)


def _pack_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in (store / "packs").glob("*.pack"))


def _stored(store: Path) -> dict[str, int]:
    out = {}
    for item in pagestore.list_backups(store):
        assert isinstance(item, pagestore.Manifest), item
        out[item.name] = item.stats["bytes_stored"]
    return out


def _kept_rebuild(store: Path, images: dict[str, bytes], out: Path) -> None:
    names = {b.name for b in pagestore.list_briefs(store) if isinstance(b, pagestore.Brief)}
    assert names == set(images)
    for name in sorted(names):
        assert rebuilt(store, name, out) == images[name], name


def test_a_gc_parses_no_cached_manifest_and_repacks_once_enough_died(
    tmp_path: Path, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve chained backups of a hot table, their briefs cached by a listing. Deleting one
    (what an `every: 1m` policy at its keep prunes each minute) and collecting as the prune
    does parses no manifest at all (before: every kept manifest, twice), repacks nothing, and
    records the bytes that backup stored as debt. Deleting the middle backups brings the debt
    past a tenth of the store: that GC repacks (parsing the kept manifests) and clears the
    debt; the next listing parses nothing (the rewritten manifests' briefs were cached) and
    equals the manifests parsed in full; every kept backup rebuilds byte for byte."""
    _, images = hot_chain(tmp_path, store, 12)
    stored = _stored(store)
    pagestore.list_briefs(store)
    seen = _parses(monkeypatch)

    pagestore.delete_backup(store, "b06")
    images.pop("b06")
    plain = pagestore.collect_garbage(store)
    assert plain.packs_deleted == () and plain.repacked is None
    assert stored["b06"] < REPACK_WHEN * _pack_bytes(store)  # the case under test
    gated = pagestore.collect_garbage(store, repack_below=0.5, repack_when=REPACK_WHEN)
    assert gated.repacked is None
    assert seen == []
    assert _debt(store) == stored["b06"]
    _kept_rebuild(store, images, tmp_path / "out")  # (a rebuild reads its manifest)
    seen.clear()

    middle = ["b01", "b02", "b03", "b04", "b05", "b07", "b08", "b09"]
    for name in middle:
        pagestore.delete_backup(store, name)
        images.pop(name)
    assert seen == []
    debt = _debt(store)
    assert debt == sum(stored[n] for n in ["b06", *middle])
    assert debt >= REPACK_WHEN * _pack_bytes(store)
    report = pagestore.collect_garbage(store, repack_below=0.5, repack_when=REPACK_WHEN)
    assert report.repacked is not None and report.repacked.refused is None
    assert report.repacked.packs_repacked and report.repacked.manifests_rewritten >= 1
    assert sorted(set(seen)) == sorted(images)  # the pass: each kept manifest in full
    assert _debt(store) == 0

    seen.clear()
    briefs._memo.clear()
    listed = pagestore.list_briefs(store)
    assert seen == []
    assert listed == [pagestore.Brief.of(m) for m in pagestore.list_backups(store)]  # type: ignore[arg-type]
    _kept_rebuild(store, images, tmp_path / "out")
    seen.clear()
    again = pagestore.collect_garbage(store, repack_below=0.5, repack_when=REPACK_WHEN)
    assert again.repacked is None and again.packs_deleted == () and seen == []


def test_an_unknown_debt_makes_the_repack_pass_due(tmp_path: Path, store: Path) -> None:
    """The debt only says when the pass runs, and errs towards running it: a deleted manifest
    that cannot be read (the bytes it stored unknown), or a debt file that does not parse,
    makes the next gated GC repack; after the pass the debt is zero and the next GC does not
    repack; every kept backup rebuilds byte for byte."""
    _, images = hot_chain(tmp_path, store, 5)
    (store / "manifests" / "b02.json").write_bytes(b"{not a manifest")
    pagestore.delete_backup(store, "b02")
    images.pop("b02")
    assert _debt(store) is None
    gated = pagestore.collect_garbage(store, repack_below=0.5, repack_when=REPACK_WHEN)
    assert gated.repacked is not None and gated.repacked.refused is None
    assert _debt(store) == 0
    assert pagestore.collect_garbage(store, repack_below=0.5, repack_when=1e-9).repacked is None

    (store / DEBT).write_bytes(b"backup-sidecar-repack-debt 1 many\n")
    assert _debt(store) is None
    gated = pagestore.collect_garbage(store, repack_below=0.5, repack_when=REPACK_WHEN)
    assert gated.repacked is not None and _debt(store) == 0
    _kept_rebuild(store, images, tmp_path / "out")


def test_a_directory_planted_at_the_debt_never_blocks_a_delete_or_a_gc(
    tmp_path: Path, store: Path
) -> None:
    """A directory planted at `.repack-debt` (the debt cannot be read nor replaced): deleting
    a backup still deletes it and the GC still sweeps, each reporting in one line that the
    debt was not written, naming it; every gated GC then repacks (the pass is due while the
    debt is unknown), and every kept backup rebuilds byte for byte. Before, the delete failed
    on the rename (`Is a directory`), so a prune could never expire anything."""
    _, images = hot_chain(tmp_path, store, 5)
    (store / DEBT).mkdir()
    problems: list[str] = []
    pagestore.delete_backup(store, "b02", on_problem=problems.append)
    images.pop("b02")
    assert not (store / "manifests" / "b02.json").exists()
    assert len(problems) == 1 and f"{store / DEBT} not written" in problems[0], problems
    for _ in range(2):
        problems.clear()
        gated = pagestore.collect_garbage(
            store, repack_below=0.5, repack_when=REPACK_WHEN, on_problem=problems.append
        )
        assert gated.repacked is not None and gated.repacked.refused is None
        assert [p for p in problems if "repack debt" in p], problems
    _kept_rebuild(store, images, tmp_path / "out")
