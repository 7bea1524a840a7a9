"""Repacking mostly-dead packs: the bytes a long chain with a hot table keeps, and reclaims.

    python -m bench.repack [--cold-mib 64] [--hot-rows 20000] [--backups 48] [--keep 6]

A rollback-journal database with a cold table of ``--cold-mib`` and a hot table of
``--hot-rows`` rows (~300 bytes each). Each of ``--backups`` chained incrementals (each the
parent of the next, as a policy's chain) rewrites every hot row, adds 20 cold rows and
changes 20 scattered cold rows, so each backup's delta pack holds the hot pages (dead once
the next backup rewrites them) and a few cold pages (live until changed again). The chain
is then pruned to its base and its ``--keep`` newest, and the store collected twice: a
plain GC (what main did), then a GC with repack. Prints the packs' bytes after each, the
repack's report and time, and checks that every kept backup rebuilds to the image recorded.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from backup_sidecar import pagestore
from backup_sidecar.pagestore.repack import REPACK_BELOW


def _db(path: Path, cold_mib: int, hot_rows: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=delete")
    conn.execute("CREATE TABLE cold (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
    conn.execute("CREATE TABLE hot (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    rows = cold_mib * 1024 * 1024 // 1000
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "INSERT INTO cold(body) SELECT randomblob(1000) FROM n",
        (rows,),
    )
    conn.executemany("INSERT INTO hot(v) VALUES (?)", [("h" * 300,)] * hot_rows)
    conn.commit()
    conn.close()


def _change(path: Path, i: int, rnd: random.Random) -> None:
    """Every hot row rewritten, 20 cold rows added and 20 scattered cold rows changed (their
    pages stay live in later backups beside the hot pages that die)."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE hot SET v = ? || substr(v, 7)", (f"{i:06d}",))
        conn.executemany("INSERT INTO cold(body) VALUES (randomblob(1000))", [()] * 20)
        (top,) = conn.execute("SELECT max(id) FROM cold").fetchone()
        ids = [(rnd.randrange(1, top),) for _ in range(20)]
        conn.executemany("UPDATE cold SET body = randomblob(1000) WHERE id = ?", ids)
    conn.close()


def _pack_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in (store / "packs").glob("*.pack"))


def run(cold_mib: int, hot_rows: int, backups: int, keep: int, work: Path) -> dict[str, object]:
    db, store = work / "bench.db", work / "pages"
    _db(db, cold_mib, hot_rows)
    now = datetime(2026, 12, 7, tzinfo=UTC)
    parent = None
    names = []
    rnd = random.Random(7)
    for i in range(backups):
        _change(db, i, rnd)
        name = f"b{i:04d}"
        pagestore.create_backup(db, store=store, name=name, now=now, parent=parent)
        names.append(name)
        parent = name
    stored = _pack_bytes(store)
    for name in names[1:-keep]:
        pagestore.delete_backup(store, name)
    plain = pagestore.collect_garbage(store)
    after_gc = _pack_bytes(store)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    report = pagestore.collect_garbage(store, repack_below=REPACK_BELOW).repacked
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    assert report is not None
    after = _pack_bytes(store)
    cpu1 = time.process_time()
    again = pagestore.collect_garbage(store, repack_below=REPACK_BELOW).repacked
    again_cpu = time.process_time() - cpu1
    assert again is not None and not again.packs_repacked
    cpu2 = time.process_time()
    pagestore.collect_garbage(store)
    plain_cpu = time.process_time() - cpu2
    shas = {}
    for name in [names[0], *names[-keep:]]:
        m = pagestore.rebuild(store, name, out=work / f"{name}.db")
        (work / f"{name}.db").unlink()
        shas[name] = m.image_sha256
    return {
        "database_bytes": db.stat().st_size,
        "backups": backups,
        "kept": len(shas),
        "packs_bytes_chain": stored,
        "packs_bytes_after_plain_gc": after_gc,
        "plain_gc_packs_deleted": len(plain.packs_deleted),
        "packs_bytes_after_repack": after,
        "repack": {
            "packs_repacked": len(report.packs_repacked),
            "packs_written": len(report.packs_written),
            "manifests_rewritten": report.manifests_rewritten,
            "bytes_before": report.bytes_before,
            "bytes_after": report.bytes_after,
            "bytes_reclaimed": report.bytes_reclaimed,
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
        },
        "gc_cpu_s_nothing_to_do": {
            "with_repack": round(again_cpu, 3),
            "plain": round(plain_cpu, 3),
        },
        "kept_rebuilt": sorted(shas),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold-mib", type=int, default=64)
    parser.add_argument("--hot-rows", type=int, default=20000)
    parser.add_argument("--backups", type=int, default=48)
    parser.add_argument("--keep", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-repack-") as tmp:
        result = run(args.cold_mib, args.hot_rows, args.backups, args.keep, Path(tmp))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
