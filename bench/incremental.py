"""Issue 16's benchmark rows, side by side in one run (bench database, issue 16's day of writes).

    python -m bench.incremental [--size-mib 1024] [--reps 2] [--out bench/RESULTS.md]
    python -m bench.incremental --quick --work DIR --out OUT.md   # tiny, every 5 s (smoke test)

1. Stored bytes for the day: the sidecar's incremental (`backup --policy inc` of a
   `mode: incremental` policy, the real CLI) against the compressed page-delta bound,
   Litestream (file replica, default settings, replicating while the day is written) and
   restic (`data_added` of a backup after the day, into a repository holding the day before).
2. An incremental of the unchanged database: bytes written and wall time against a full
   archive's (`backup --policy full`).
3. Restore (`restore NAME --force`) of the 24th backup of a chain (the day in 24 slices, a
   backup after each) against the restore of a full archive of the same database.
4. A daemon with an `every: 1m` incremental policy under bench.writer at 200 commits/s
   (bench/incremental_daemon.py).
The section "Incremental (issue 16)" of OUT is written (replaced if there); the rest is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

from bench import incremental_daemon, incremental_peers
from bench.gen import ISSUE_DAY, generate, mutate
from bench.incremental_render import write_section
from bench.methods import PY
from bench.pagestore import delta_bound
from bench.proc import Measurement, run
from bench.run import REPO, WORK, cached_db, copy_db, log, warm


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def snapshot(db: Path, out: Path) -> Path:
    """A consistent copy of ``db`` (backup API), for the page-delta bound."""
    out.unlink(missing_ok=True)
    src, dest = sqlite3.connect(db), sqlite3.connect(out)
    src.backup(dest)
    dest.close()
    src.close()
    return out


class Sidecar:
    """The real CLI on one configuration: ``inc`` (incremental, as the README's example:
    `check: quick`, no rebase), ``full`` (archives, never scheduled) and ``pre_restore``."""

    def __init__(self, root: Path, db: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.backups = root / "backups"
        self.backups.mkdir(exist_ok=True)
        self.config = root / "sidecar.yaml"
        self.config.write_text(
            f"backup_dir: {self.backups}\n"
            f"databases:\n  user: {{path: {db}}}\n"
            "policies:\n"
            "  inc: {every: 1h, keep: 10000, mode: incremental, check: quick}\n"
            '  full: {schedule: "0 3 * * *", keep: 100}\n'
            "  pre_restore: {keep: 100}\n"
        )

    def env(self) -> dict[str, str]:
        return {
            "SIDECAR_CONFIG": str(self.config),
            "SIDECAR_LOG_FORMAT": "json",
            "PYTHONPATH": str(REPO),
        }

    def cli(self, *args: str) -> tuple[Measurement, dict[str, Any]]:
        m = run([PY, "-m", "backup_sidecar", *args, "--json"], env=self.env(), timeout=3600)
        if m.returncode != 0:
            raise RuntimeError(f"backup-sidecar {' '.join(args)}: {m.stderr.strip()[-2000:]}")
        return m, json.loads(m.stdout)

    def pages(self) -> int:
        return du(self.backups / "pages")

    def backup(self, policy: str) -> tuple[Measurement, dict[str, Any], int]:
        """One backup; its output and the bytes it added to the backup directory."""
        before = du(self.backups)
        m, out = self.cli("backup", "--policy", policy)
        return m, out, du(self.backups) - before

    def restore(self, name: str) -> Measurement:
        m, out = self.cli("restore", name, "--force")
        pre = out.get("pre_restore_archive")
        if pre:  # the safety archive of what was live: not this row's business
            (self.backups / f"{pre}.tar.gz").unlink(missing_ok=True)
        return m


def day_row(live: Path, work: Path, *, quick: bool) -> dict[str, Any]:
    """Row 1 (the day's stored bytes, four ways) and the day itself."""
    side = Sidecar(work / "day", live)
    before = snapshot(live, work / "before.db")
    log("day: sidecar base backup")
    base_m, _, base_bytes = side.backup("inc")
    restic_repo = incremental_peers.restic_init(work / "restic")
    restic_base = incremental_peers.restic_backup(restic_repo, before, work / "restic_snap")
    log("day: litestream start (initial snapshot)")
    lite = incremental_peers.Litestream(live, work / "litestream", l1_every="1s" if quick else None)
    try:
        lite.wait_synced(deadline_s=600)
        lite_before = lite.level_bytes()
        log("day: the day's writes (litestream replicating)")
        t0 = time.monotonic()
        rows = mutate(live, seed=2, **ISSUE_DAY)
        write_s = time.monotonic() - t0
        lite.wait_synced(deadline_s=600)
        lite_after = lite.level_bytes()
    finally:
        lite.stop()
    log("day: sidecar incremental")
    day_m, day_out, day_bytes = side.backup("inc")
    after = snapshot(live, work / "after.db")
    restic_day = incremental_peers.restic_backup(restic_repo, after, work / "restic_snap")
    page_size = sqlite3.connect(after).execute("PRAGMA page_size").fetchone()[0]
    changed, raw, bound = delta_bound(before, after, page_size)
    per_page = incremental_peers.per_page_delta(before, after, page_size)
    pages = after.stat().st_size // page_size
    lite_day = {k: lite_after.get(k, 0) - lite_before.get(k, 0) for k in lite_after}
    res = {
        "db_bytes": after.stat().st_size,
        "rows_written": rows,
        "day_write_s": write_s,
        "pages": pages,
        "changed_pages": changed,
        "changed_raw_bytes": raw,
        "bound_bytes": bound,
        "per_page_delta_bytes": per_page,
        "sidecar_base_bytes": base_bytes,
        "sidecar_base_s": base_m.wall_s,
        "sidecar_day_bytes": day_bytes,
        "sidecar_day_s": day_m.wall_s,
        "sidecar_day_out": day_out,
        "litestream_levels_before": lite_before,
        "litestream_levels_day": lite_day,
        "litestream_l0_day": lite_day.get("0", 0),
        "litestream_dir_day": sum(lite_day.values()),
        "restic_base_added": restic_base,
        "restic_day_added": restic_day,
    }
    before.unlink()
    after.unlink()
    shutil.rmtree(restic_repo, ignore_errors=True)
    shutil.rmtree(work / "litestream", ignore_errors=True)
    res["side"] = side
    return res


def unchanged_row(side: Sidecar, reps: int) -> dict[str, Any]:
    """Row 2: incrementals of the unchanged database and full archives, interleaved."""
    inc_s, inc_bytes, full_s, full_cpu, inc_cpu = [], [], [], [], []
    for rep in range(reps):
        log(f"unchanged: rep {rep + 1}/{reps}")
        m, _, added = side.backup("inc")
        inc_s.append(m.wall_s)
        inc_cpu.append(m.cpu_s)
        inc_bytes.append(added)
        m, out, _ = side.backup("full")
        full_s.append(m.wall_s)
        full_cpu.append(m.cpu_s)
        Path(out["path"]).unlink()
    return {
        "inc_s": inc_s,
        "inc_cpu": inc_cpu,
        "inc_bytes": inc_bytes,
        "full_s": full_s,
        "full_cpu": full_cpu,
    }


def chain_row(live: Path, work: Path, *, slices: int, reps: int) -> dict[str, Any]:
    """Row 3: the day in ``slices`` slices, a backup after each; restore of the last against
    the restore of a full archive of the same database."""
    side = Sidecar(work / "chain", live)
    names, stored = [], 0
    for i in range(1, slices + 1):
        mutate(live, seed=100 + i, fraction=ISSUE_DAY["fraction"] / slices, rewritten=0.0)
        _, out, added = side.backup("inc")
        names.append(out["name"])
        stored += added
    log(f"chain: {slices} backups, {stored:,} bytes")
    _, full_out, _ = side.backup("full")
    inc_s, full_s = [], []
    for rep in range(reps):
        log(f"chain: restores, rep {rep + 1}/{reps}")
        inc_s.append(side.restore(names[-1]).wall_s)
        full_s.append(side.restore(full_out["name"]).wall_s)
    shutil.rmtree(side.backups)
    return {
        "backups": slices,
        "stored_bytes": stored,
        "inc_restore_s": inc_s,
        "full_restore_s": full_s,
        "archive_bytes": full_out.get("size_bytes", 0),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=float, default=1024)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="4 MiB, 3 slices, every 5 s (smoke)")
    ap.add_argument("--skip-daemon", action="store_true", help="rows 1-3 only")
    ap.add_argument("--work", type=Path, default=WORK / "incremental")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS.md")
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    start, load0 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), os.getloadavg()
    live = args.work / "live.db"
    if args.quick:
        generate(args.work / "gen.db", size_bytes=4 * 2**20, seed=1)
        copy_db(args.work / "gen.db", live)
        (args.work / "gen.db").unlink()
    else:
        copy_db(cached_db(args.size_mib, 1), live)
    warm(live)
    reps = 1 if args.quick else args.reps
    res: dict[str, Any] = {"quick": args.quick, "size_mib": 4 if args.quick else args.size_mib}
    day = day_row(live, args.work, quick=args.quick)
    side = day.pop("side")
    res["day"] = day
    res["unchanged"] = unchanged_row(side, reps)
    shutil.rmtree(side.backups)
    res["chain"] = chain_row(live, args.work, slices=3 if args.quick else 24, reps=reps)
    if not args.skip_daemon:
        res["daemon"] = incremental_daemon.measure(
            live,
            args.work / "daemon",
            every_s=5 if args.quick else 60,
            window_s=12 if args.quick else 240,
            baseline_s=3 if args.quick else 60,
        )
    res["run"] = {
        "start": start,
        "end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_start": load0,
        "load_end": os.getloadavg(),
    }
    (args.work / "results.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    write_section(args.out, res)
    if not args.quick:
        (WORK / "incremental.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    shutil.rmtree(args.work, ignore_errors=True)
    log(f"wrote {args.out}; medians: {statistics.median(res['unchanged']['inc_s']):.2f} s")


if __name__ == "__main__":
    main()
