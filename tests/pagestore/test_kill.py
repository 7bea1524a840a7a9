"""kill -9 at every file system step of a backup, a delete and a GC: every kept backup still
rebuilds to its image, and the store goes on working (the next GC sweeps the leftovers)."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from backup_sidecar import pagestore
from support.databases import make_db
from support.pages import backup, hot_chain, rebuilt
from support.paths import ROOT

CRASH = ROOT / "tests" / "support" / "pagestore_crash.py"


def _run(kill_at: int, store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CRASH), str(kill_at), str(store), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _all_kept_rebuild(store: Path, images: dict[str, bytes], out: Path) -> None:
    listed = pagestore.list_backups(store)
    names = set()
    for item in listed:
        assert isinstance(item, pagestore.Manifest), item
        names.add(item.name)
    assert set(images) <= names, (sorted(images), sorted(names))
    for name in names & set(images):
        assert rebuilt(store, name, out) == images[name], name


def _grow(db: Path, i: int) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany(
            "INSERT INTO items(body) VALUES (?)", [(f"step-{i}-{j}" * 20,) for j in range(200)]
        )
        conn.execute("UPDATE items SET body = ? WHERE id = ?", (f"edit {i}", 1 + i * 37))
    conn.close()


@pytest.mark.slow
def test_kill_at_every_step_of_backup_delete_and_gc(tmp_path: Path, store: Path) -> None:
    """Each run is a real subprocess SIGKILLed at step N (N = 1, 2, ... until the operation
    completes); after every kill each backup that existed before (or completed) rebuilds to
    its exact image, and a final GC plus backup leave a working store. The backups are deltas
    of ``base``, which the GC phase deletes: its pack must survive every kill of the sweep."""
    db = make_db(tmp_path / "live.db", wal=False, rows=2000)
    images: dict[str, bytes] = {}
    backup(db, store, "base")
    images["base"] = db.read_bytes()
    out = tmp_path / "out"

    # A backup killed at each step (1, 2, ... until one completes): never a manifest naming a
    # missing pack. The database grows between runs, so each run has a few more steps.
    n = 0
    while True:
        n += 1
        assert n < 200, "the backup never completed"
        _grow(db, n)
        done = _run(n, store, "backup", str(db), f"k{n}", "base")
        assert done.returncode in (0, -signal.SIGKILL), done.stderr
        if (store / "manifests" / f"k{n}.json").exists():
            images[f"k{n}"] = db.read_bytes()
        _all_kept_rebuild(store, images, out)
        if done.returncode == 0:
            break
    assert n >= 8 and 1 <= sum(k.startswith("k") for k in images) <= 3

    # A delete killed before its unlink (the repack debt already added: steps 1-5) and after
    # it (before the directory's fsync): the backup is either still whole or gone.
    for name in ("d1", "d2", "d3"):
        _grow(db, len(images) * 10)
        backup(db, store, name)
        images[name] = db.read_bytes()
    for n, name in zip((6, 7, 0), ("d1", "d2", "d3"), strict=True):
        done = _run(n, store, "delete", name)
        assert done.returncode in (0, -signal.SIGKILL), done.stderr
        if not (store / "manifests" / f"{name}.json").exists():
            images.pop(name, None)
        _all_kept_rebuild(store, images, out)
    assert "d1" in images and "d2" not in images and "d3" not in images

    # A GC killed at each step (deleting two more backups first gives it packs to sweep).
    pagestore.delete_backup(store, "base")
    images.pop("base")
    gc_steps = _steps_without_running_gc(store)
    gc_kills = 0
    for n in range(1, gc_steps + 1):
        done = _run(n, store, "gc")
        assert done.returncode in (0, -signal.SIGKILL), done.stderr
        gc_kills += done.returncode == -signal.SIGKILL
        _all_kept_rebuild(store, images, out)
    assert gc_kills >= 2
    pagestore.collect_garbage(store)
    assert pagestore.collect_garbage(store).packs_deleted == ()
    assert not [p for d in ("packs", "manifests") for p in (store / d).glob(".tmp-*")]
    _grow(db, 999)
    backup(db, store, "after")
    images["after"] = db.read_bytes()
    _all_kept_rebuild(store, images, out)
    assert len(images) >= 3


def _steps_without_running_gc(store: Path) -> int:
    """A GC's step count: the unlinks it will make plus the fsyncs (2), counted from the store
    itself so that the sweep is still there to be killed."""
    kept: set[str] = set()
    for item in pagestore.list_backups(store):
        assert isinstance(item, pagestore.Manifest)
        kept |= item.packs
    packs = [p for p in (store / "packs").glob("*.pack") if p.stem not in kept]
    temps = [p for d in ("packs", "manifests") for p in (store / d).glob(".tmp-*")]
    assert packs, "the GC must have something to sweep"
    return len(packs) + len(temps) + 2


@pytest.mark.slow
def test_kill_at_every_step_of_a_repack(tmp_path: Path, store: Path) -> None:
    """A GC with repack (a hot chain pruned to its base and last two backups: mostly-dead
    packs to copy out, manifests to rewrite, old packs to delete) SIGKILLed at its Nth file
    system step, N = 1, 2, ... until it completes, each time from the same store: after every
    kill each kept backup rebuilds to its exact image, and a GC with repack run again leaves
    a store with nothing more to sweep or repack, every backup still rebuilding."""
    _, images = hot_chain(tmp_path, store, 12)
    for name in sorted(images)[1:-2]:
        pagestore.delete_backup(store, name)
        images.pop(name)
    pagestore.collect_garbage(store)
    template = tmp_path / "template"
    shutil.copytree(store, template)
    out = tmp_path / "out"
    kills = 0
    for n in range(1, 200):
        shutil.rmtree(store)
        shutil.copytree(template, store)
        done = _run(n, store, "repack")
        assert done.returncode in (0, -signal.SIGKILL), done.stderr
        _all_kept_rebuild(store, images, out)
        if done.returncode == 0:
            break
        kills += 1
        report = pagestore.collect_garbage(store, repack_below=0.5)
        _all_kept_rebuild(store, images, out)
        final = pagestore.collect_garbage(store, repack_below=0.5)
        assert final.packs_deleted == () and final.repacked is not None
        assert final.repacked.packs_repacked == (), (n, report)
    else:
        raise AssertionError("the repack never completed")
    assert kills >= 8, kills
