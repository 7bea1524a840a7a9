"""Repacking mostly-dead packs (pagestore/repack.py through ``collect_garbage(repack_below=)``):
a chain with a hot table, pruned to its last backups, keeps packs whose pages are mostly dead;
the repack copies the live pages out, points the manifests at the copies, deletes the old
packs, and every kept backup still rebuilds byte for byte."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from backup_sidecar import pagestore
from support.pages import backup, hot_chain, load, pack_files, rebuilt


def _pack_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in (store / "packs").glob("*.pack"))


def _kept_rebuild(store: Path, images: dict[str, bytes], out: Path) -> list[str]:
    names = []
    for item in pagestore.list_backups(store):
        assert isinstance(item, pagestore.Manifest), item
        assert rebuilt(store, item.name, out) == images[item.name], item.name
        names.append(item.name)
    return sorted(names)


def test_repack_reclaims_a_hot_chains_dead_pages_and_every_kept_backup_rebuilds(
    tmp_path: Path, store: Path
) -> None:
    """Twelve chained backups, each rewriting the hot table and adding a few cold rows, pruned
    to the base and the last two: a plain GC leaves the middle backups' packs (their cold
    pages are still named), mostly dead. The repack replaces them, rewrites the manifests
    naming them (same image SHA-256), reclaims most of their bytes, and the three kept
    backups and a new one on the chain rebuild to their exact images; a second repack finds
    nothing to do."""
    db, images = hot_chain(tmp_path, store, 12)
    for name in sorted(images)[1:-2]:
        pagestore.delete_backup(store, name)
        images.pop(name)
    plain = pagestore.collect_garbage(store)
    assert plain.repacked is None
    before, packs_before = _pack_bytes(store), pack_files(store)
    shas = {n: load(store, n).image_sha256 for n in images}

    report = pagestore.collect_garbage(store, repack_below=0.5).repacked
    assert report is not None and report.refused is None
    assert len(report.packs_repacked) >= 2 and report.manifests_rewritten >= 2
    assert report.bytes_reclaimed > 0
    after = _pack_bytes(store)
    assert before - after == report.bytes_reclaimed
    assert report.bytes_after < 0.3 * report.bytes_before, report
    assert not {f"{p}.pack" for p in report.packs_repacked} & pack_files(store)
    assert {f"{p}.pack" for p in report.packs_written} <= pack_files(store) - packs_before
    assert {n: load(store, n).image_sha256 for n in images} == shas
    out = tmp_path / "out"
    assert _kept_rebuild(store, images, out) == sorted(images)

    again = pagestore.collect_garbage(store, repack_below=0.5)
    assert again.packs_deleted == () and again.repacked is not None
    assert again.repacked.packs_repacked == ()
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE hot SET v = 'new' || substr(v, 4)")
    conn.close()
    backup(db, store, "next", parent=max(images))
    images["next"] = db.read_bytes()
    assert _kept_rebuild(store, images, out) == sorted(images)


def test_a_damaged_page_stops_the_repack_with_nothing_changed(tmp_path: Path, store: Path) -> None:
    """A page of a pack to be repacked that no longer matches its SHA-256 (a flipped byte in
    the pack's frames): the repack marks that pack damaged and changes nothing else (no
    manifest rewritten, no pack deleted, no new pack left), and says why."""
    _, images = hot_chain(tmp_path, store, 6)
    for name in sorted(images)[1:-1]:
        pagestore.delete_backup(store, name)
    pagestore.collect_garbage(store)
    manifests = {p.name: p.read_bytes() for p in (store / "manifests").glob("*.json")}
    packs = pack_files(store)
    for pack in sorted(packs):  # flip a byte in the first frame of every pack
        path = store / "packs" / pack
        data = bytearray(path.read_bytes())
        data[40] ^= 0xFF
        path.write_bytes(bytes(data))
    report = pagestore.collect_garbage(store, repack_below=0.5).repacked
    assert report is not None and report.refused is not None
    assert report.packs_repacked == () and report.manifests_rewritten == 0
    assert pack_files(store) == packs
    assert {p.name: p.read_bytes() for p in (store / "manifests").glob("*.json")} == manifests
    assert list((store / "packs").glob("*.damaged"))
    assert not list((store / "packs").glob(".tmp-*"))
