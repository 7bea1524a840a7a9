"""CPU seconds of one incremental of the bench database under bench.writer, code A against B.

    python -m bench.readcost --before DIR [--size-mib 1024] [--rounds 4] [--gap-s 20]

DIR is the ``daemon`` directory of another checkout (e.g. ``git archive COMMIT daemon | tar
-x -C /tmp/base``). With bench.writer committing 200 rows a second into the live database
(WAL), each round makes one incremental with the code in DIR and one with this checkout,
interleaved, each into its own store (its own chain: each backup's parent is the previous
one of the same code), as the daemon does: ``create_backup(read_in_child=True, check=
"quick")``. Each backup runs in a driver process of its own (PYTHONPATH the code's
``daemon``) that reports the CPU seconds of ``create_backup`` alone: its own and its reader
child's (user + system), and the wall time. The base backup of each chain is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.impact import _start_writer, _stop_writer
from bench.run import REPO, WORK, cached_db, copy_db, log, warm

_DRIVER = """
import json, resource, sys, time
from datetime import UTC, datetime
from pathlib import Path
from backup_sidecar import pagestore
db, store, name, parent = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4] or None
def cpu(who):
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime
s0, c0, w0 = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN), time.perf_counter()
m = pagestore.create_backup(db, store=store, name=name, now=datetime.now(UTC), parent=parent,
                            read_in_child=True, check="quick")
s1, c1, w1 = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN), time.perf_counter()
print(json.dumps({"parent_cpu_s": s1 - s0, "child_cpu_s": c1 - c0, "wall_s": w1 - w0,
                  "pages_new": m.stats["pages_new"], "check": m.metadata.get("check_of")}))
"""


def one(code: Path, db: Path, store: Path, name: str, parent: str | None) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    out = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(db), str(store), name, parent or ""],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    doc: dict[str, Any] = json.loads(out.stdout)
    doc["cpu_s"] = doc["parent_cpu_s"] + doc["child_cpu_s"]
    return doc


def _summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    return {
        key: statistics.median(r[key] for r in rows)
        for key in ("cpu_s", "parent_cpu_s", "child_cpu_s", "wall_s")
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True, help="the other code's daemon dir")
    ap.add_argument("--size-mib", type=float, default=1024)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--gap-s", type=float, default=20.0, help="writer time between backups")
    ap.add_argument("--out", type=Path, default=WORK / "readcost.json")
    args = ap.parse_args()
    work = WORK / "readcost"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    live = copy_db(cached_db(args.size_mib, 1), work / "live.db")
    warm(live)
    codes = {"before": args.before.resolve(), "after": REPO / "daemon"}
    parents: dict[str, str | None] = {}
    for label, code in codes.items():
        log(f"{label}: base backup")
        one(code, live, work / label, "base", None)
        parents[label] = "base"
    rows: dict[str, list[dict[str, Any]]] = {label: [] for label in codes}
    writer_out = work / "writer.json"
    writer = _start_writer(live, writer_out)
    try:
        for rnd in range(args.rounds):
            for label in codes if rnd % 2 == 0 else reversed(list(codes)):
                time.sleep(args.gap_s)  # the writer's commits between backups, as a schedule
                name = f"r{rnd}"
                row = one(codes[label], live, work / label, name, parents[label])
                parents[label] = name
                rows[label].append(row)
                log(f"{label} {name}: {row}")
    finally:
        writer_data = _stop_writer(writer, writer_out)
    res: dict[str, Any] = {
        "size_bytes": live.stat().st_size,
        "rounds": rows,
        "median": {label: _summary(r) for label, r in rows.items()},
        "writer_errors": writer_data["error_count"],
        "load_end": os.getloadavg(),
    }
    med = res["median"]
    res["after_over_before_cpu"] = med["after"]["cpu_s"] / med["before"]["cpu_s"]
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    json.dump({k: res[k] for k in ("median", "after_over_before_cpu", "load_end")}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
