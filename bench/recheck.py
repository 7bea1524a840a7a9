"""Re-measure the wall-time targets alone (seed, floor, backup, verify, decompression,
integrity_check), repetitions interleaved, and print a Markdown section to append to
RESULTS.md. For a second sample when the main run was noisy.

    python -m bench.recheck [--size-mib 1024] [--reps 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
from datetime import UTC, datetime

from bench import methods as mt
from bench.methods import Sample, Workspace
from bench.report import med, method_table
from bench.run import WORK, cached_db, copy_db, log, warm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=float, default=1024)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    ws = Workspace(WORK / "recheck")
    shutil.rmtree(ws.root, ignore_errors=True)
    ws.root.mkdir(parents=True)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        db = copy_db(cached_db(args.size_mib, 1), ws.root / "bench.db")
        warm(db)
        backups = ws.dir("backups")
        g: dict[str, list[Sample]] = {}
        for rep in range(args.reps):
            log(f"recheck {rep + 1}/{args.reps}")
            name = f"r{rep}"
            samples = [mt.seed(ws, db, rep), mt.floor(ws, db, rep, keep=True)]
            samples += [mt.sidecar_backup(ws, db, backups, name)]
            samples += [mt.sidecar_verify(ws, db, backups, name)]
            samples += [mt.decompress_isal(ws, backups / f"{name}.tar.gz")]
            snap = ws.root / "floor" / f"snap_{rep}.db"
            samples += [mt.integrity_alone(ws, snap)]
            snap.unlink()
            (backups / f"{name}.tar.gz").unlink()
            for s in samples:
                g.setdefault(s.method, []).append(s)
        size = db.stat().st_size
    finally:
        shutil.rmtree(ws.root, ignore_errors=True)
    seed, floor = g["seed method"], g["floor (snapshot + integrity_check)"]
    side, ver = g["backup-sidecar backup"], g["backup-sidecar verify"]
    dec, chk = g["decompression alone (isal)"], g["integrity_check alone"]
    base = med(dec) + med(chk)
    noise = statistics.median(s.m.noise_cores for v in g.values() for s in v)
    lines = [
        f"## Re-check of the wall-time targets ({started} UTC, {args.reps} repetitions, "
        f"median noise {noise:.2f} cores)",
        *method_table(g, size),
        "",
        f"- seed / backup-sidecar: {med(seed) / med(side):.2f}x (target >= 5x); "
        f"seed / floor: {med(seed) / med(floor):.2f}x",
        f"- backup-sidecar / floor: {med(side) / med(floor):.2f}x (target <= 1.3x)",
        f"- verify / (decompression + integrity_check): {med(ver) / base:.2f}x (target <= 1.3x)",
        "",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
