"""The page store on the bench database: how to read pages, and what a day of writes costs.

    python -m bench.pagestore [--size-mib 1024] [--reps 2] [--out bench/work/pagestore.json]

1. Page reading, both ways the issue names, each hashing every page as a backup does:
   ``dbpage`` (``sqlite_dbpage`` of the sqlean.py wheel, one read transaction of the live
   database, no copy) against ``snapshot`` (one-step backup API copy into a temporary file,
   then reading its pages). Repetitions interleaved, warm page cache.
2. The store itself: a full backup, an incremental of the unchanged database, then one of
   the "day of writes" (bench.gen mutate), each with the previous one as parent (changed
   pages stored as deltas of their old version); the day's stored bytes against the page-delta
   bound (the changed pages alone, concatenated, zstd level 3), and rebuild times.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backports import zstd

from backup_sidecar import pagestore
from backup_sidecar.pagestore.reader import read_pages
from bench.gen import mutate
from bench.run import WORK, cached_db, copy_db, log, warm


def read_dbpage(db: Path) -> tuple[int, dict[str, float]]:
    t0 = time.perf_counter()
    image = hashlib.sha256()
    n = 0
    with read_pages(db) as (_, pages):
        for page in pages:
            image.update(page)
            hashlib.sha256(page).digest()
            n += 1
    return n, {"total_s": time.perf_counter() - t0}


def read_snapshot(db: Path, tmp: Path) -> tuple[int, dict[str, float]]:
    t0 = time.perf_counter()
    src = sqlite3.connect(db)
    dest = sqlite3.connect(tmp)
    src.backup(dest, pages=-1)
    page_size = dest.execute("PRAGMA page_size").fetchone()[0]
    dest.close()
    src.close()
    t1 = time.perf_counter()
    image = hashlib.sha256()
    n = 0
    with tmp.open("rb") as f:
        while page := f.read(page_size):
            image.update(page)
            hashlib.sha256(page).digest()
            n += 1
    tmp.unlink()
    t2 = time.perf_counter()
    return n, {"total_s": t2 - t0, "copy_s": t1 - t0, "read_s": t2 - t1}


def page_digests(path: Path, page_size: int) -> list[bytes]:
    with path.open("rb") as f:
        return [hashlib.sha256(p).digest() for p in iter(lambda: f.read(page_size), b"")]


def delta_bound(old: Path, new: Path, page_size: int) -> tuple[int, int, int]:
    """(changed pages, their raw bytes, zstd-3 of them concatenated): the page-delta bound."""
    before = page_digests(old, page_size)
    comp = zstd.ZstdCompressor(level=3)
    out = changed = 0
    with new.open("rb") as f:
        for i, page in enumerate(iter(lambda: f.read(page_size), b"")):
            if i >= len(before) or hashlib.sha256(page).digest() != before[i]:
                changed += 1
                out += len(comp.compress(page))
    out += len(comp.flush())
    return changed, changed * page_size, out


def timed_backup(
    db: Path, store: Path, name: str, parent: str | None = None
) -> tuple[pagestore.Manifest, float, int]:
    t0 = time.perf_counter()
    m = pagestore.create_backup(db, store=store, name=name, now=datetime.now(UTC), parent=parent)
    dt = time.perf_counter() - t0
    manifest_bytes = (store / "manifests" / f"{name}.json").stat().st_size
    return m, dt, manifest_bytes


def timed_rebuild(store: Path, name: str, out: Path) -> float:
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    pagestore.rebuild(store, name, out=out)
    return time.perf_counter() - t0


def hourly_chain(live: Path, store: Path, n: int, *, parent: str, work: Path) -> dict[str, Any]:
    """A day of writes in ``n`` slices, a backup after each (parent: the one before), then the
    rebuild of the last: the issue's "restore of the 24th backup of a chain"."""
    stored, times = 0, []
    for i in range(1, n + 1):
        log(f"hourly {i}/{n}")
        mutate(live, seed=100 + i, fraction=0.01 / n)
        m, dt, manifest_bytes = timed_backup(live, store, f"hour{i}", parent)
        stored += m.stats["bytes_stored"] + manifest_bytes
        times.append(dt)
        parent = m.name
    rebuild_s = timed_rebuild(store, parent, work / "last.db")
    return {
        "backups": n,
        "stored_bytes": stored,
        "backup_s_mean": sum(times) / n,
        "backup_s_max": max(times),
        "rebuild_last_s": rebuild_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=float, default=1024)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--chain", type=int, default=24, help="hourly backups after the day")
    ap.add_argument("--out", type=Path, default=WORK / "pagestore.json")
    args = ap.parse_args()
    work = WORK / "pagestore"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    live = copy_db(cached_db(args.size_mib, 1), work / "live.db")
    warm(live)
    reads: dict[str, list[dict[str, float]]] = {"dbpage": [], "snapshot": []}
    res: dict[str, Any] = {"size_bytes": live.stat().st_size, "read": reads}
    for rep in range(args.reps):
        log(f"read rep {rep}")
        reads["dbpage"].append(read_dbpage(live)[1])
        reads["snapshot"].append(read_snapshot(live, work / "snap.db")[1])
    store = work / "store"
    log("full backup")
    full, res["full_s"], res["full_manifest_bytes"] = timed_backup(live, store, "full")
    res["full_stats"] = dict(full.stats)
    log("unchanged incremental")
    same, res["unchanged_s"], res["unchanged_manifest_bytes"] = timed_backup(
        live, store, "same", "full"
    )
    res["unchanged_stats"] = dict(same.stats)
    day1 = work / "day1.db"
    res["rebuild_full_s"] = timed_rebuild(store, "full", day1)
    log("day of writes")
    res["mutate"] = mutate(live, seed=2)
    day, res["day_s"], res["day_manifest_bytes"] = timed_backup(live, store, "day", "same")
    res["day_stats"] = dict(day.stats)
    res["day_runs"] = len(day.runs)
    day2 = work / "day2.db"
    res["rebuild_day_s"] = timed_rebuild(store, "day", day2)
    changed, raw, bound = delta_bound(day1, day2, full.page_size)
    res["delta"] = {"changed_pages": changed, "raw_bytes": raw, "zstd3_bytes": bound}
    stored = day.stats["bytes_stored"] + res["day_manifest_bytes"]
    res["day_stored_over_bound"] = stored / bound
    if args.chain:
        res["chain"] = hourly_chain(live, store, args.chain, parent="day", work=work)
        res["chain"]["rebuild_last_over_full"] = (
            res["chain"]["rebuild_last_s"] / res["rebuild_full_s"]
        )
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    json.dump(res, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
