"""The end-to-end offsite benchmark (issue 15's targets): the sidecar's real backup of a
generated database followed by the daemon's real upload pass to SeaweedFS on loopback,
plaintext and age, next to obstore putting the same archive bytes alone.

python -m bench.offsite_e2e [--sizes 100,1024] [--reps 3] [--out bench/RESULTS-offsite.md]
python -m bench.offsite_e2e --quick --out OUT.md     # 2 and 8 MiB, one round (the smoke test)

For each database size (bench/gen.py, cached in bench/work/cache/ like bench.run's), each
round runs, each mode in one process as the daemon runs them (bench/offsite_e2e_worker.py
``backup-sync``: one read-check cache shared by the backup, which reads its new archive back
into it, and the upload pass; bench/proc.py: the process's peak RSS, noise): backup + upload
pass plaintext, then obstore ``put`` of that plaintext archive alone (8 MiB parts, 4 in
flight: the Store's settings), and backup + upload pass age, the modes in alternating order
from one round to the next. The backup and the pass are timed apart (seconds, CPU seconds
of the whole process over the step, peak RSS over the step). Each round uploads under a
prefix of its own, so every pass uploads exactly one archive. The targets, each a ratio
within this run, at the largest size:

- age adds at most 10% to backup + upload: median(backup + pass, age) / (plaintext) <= 1.10;
- upload throughput at least 0.8x obstore alone: median obstore put seconds / median upload
  pass seconds (the whole pass: lease, listing, Store.upload, confirm) >= 0.8;
- peak RSS of the upload pass bounded: at the largest size / at the smallest <= 1.2,
  plaintext and age.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from pyrage import x25519

from bench.gen import generate
from bench.offsite_e2e_render import MODES, render, splice
from bench.proc import run

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "work"
sys.path.insert(0, str(REPO / "tests"))
from support.seaweed import SeaweedServer  # noqa: E402 - the tests' server, started the same way

MiB = 1024 * 1024


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def database(size_mib: int, work: Path, *, cache: bool) -> Path:
    """A generated database of ``size_mib`` (cached across runs unless ``cache`` is off), copied
    into ``work`` in WAL mode and read once (a warm page cache for every round alike)."""
    if cache:
        from bench.run import cached_db

        source = cached_db(size_mib, 1)
    else:
        source = work / f"gen_{size_mib}.db"
        generate(source, size_bytes=size_mib * MiB, seed=1)
    db = work / f"db_{size_mib}" / "user_data.db"
    db.parent.mkdir(parents=True)
    shutil.copyfile(source, db)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=wal").fetchone()
    conn.close()
    with db.open("rb") as f:
        while f.read(1 << 24):
            pass
    return db


def write_config(
    path: Path, *, db: Path, backup_dir: Path, url: str, endpoint: str, recipient: str | None
) -> Path:
    offsite: dict[str, Any] = {"url": url, "endpoint": endpoint, "path_style": True}
    if recipient:
        offsite["encryption"] = {"recipients": [recipient]}
    backup_dir.mkdir(parents=True)
    path.write_text(
        yaml.safe_dump(
            {
                "backup_dir": str(backup_dir),
                "databases": {"user": {"path": str(db)}},
                "policies": {"pre_restore": {"keep": 10}},
                "offsite": offsite,
            }
        )
    )
    return path


def step(cmd: list[str], env: dict[str, str], also_ours: tuple[int, ...]) -> dict[str, Any]:
    """The worker's JSON line, with the process's own CPU seconds, peak RSS and noise."""
    m = run([sys.executable, *cmd], env=env, cwd=REPO, also_ours=also_ours)
    if m.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed ({m.returncode}): {m.stderr[-3000:]}")
    out = json.loads(m.stdout.strip().splitlines()[-1])
    process = {"process_cpu_s": m.cpu_s, "process_maxrss_mib": m.maxrss_kib / 1024}
    return {**out, **process, "noise": m.noise_cores}


def obstore_put(ctx: dict[str, Any], archive: Path, key: str) -> dict[str, Any]:
    """obstore's put of ``archive`` alone: its seconds and CPU seconds over the put (the
    worker's), the process's peak RSS."""
    server: SeaweedServer = ctx["server"]
    spec = {"src": str(archive), "dest": "", "bucket": "bench"}
    spec |= {"endpoint": server.endpoint, "key": key}
    cmd = ["-m", "bench.offsite_worker", "obstore-put", json.dumps(spec)]
    o = step(cmd, ctx["env"], ctx["weed"])
    return {**o, "maxrss_mib": o["process_maxrss_mib"], "bytes": archive.stat().st_size}


def round_of(
    ctx: dict[str, Any], size: int, rep: int, db: Path, work: Path
) -> dict[str, dict[str, Any]]:
    """One round at one size: in each mode one process does what the daemon does (the backup,
    read back into its read-check cache, then the upload pass sharing that cache); obstore
    puts the plaintext archive alone right after the plaintext pass. Even rounds: plaintext,
    obstore, age; odd rounds: age, plaintext, obstore."""
    server: SeaweedServer = ctx["server"]
    result: dict[str, dict[str, Any]] = {}
    archive = work / f"{size}-{rep}-plaintext" / "backups" / "bench.tar.gz"
    for mode in MODES if rep % 2 == 0 else reversed(MODES):
        place = work / f"{size}-{rep}-{mode}"
        config = write_config(
            place / "sidecar.yaml",
            db=db,
            backup_dir=place / "backups",
            url=f"s3://bench/e2e-{size}-{rep}-{mode}",
            endpoint=server.endpoint,
            recipient=ctx["recipient"] if mode == "age" else None,
        )
        cmd = ["-m", "bench.offsite_e2e_worker", "backup-sync", str(config), "bench"]
        both = step(cmd, ctx["env"], ctx["weed"])
        b, u = both["backup"], both["sync"]
        b["noise"] = u["noise"] = both["noise"]
        u["process_cpu_s"], u["process_maxrss_mib"] = (
            both["process_cpu_s"],
            both["process_maxrss_mib"],
        )
        if u["confirmed"] != 1 or u["failures"]:
            raise SystemExit(f"{mode} pass confirmed {u['confirmed']}, failures {u['failures']}")
        result[f"backup {mode}"], result[f"upload pass {mode}"] = b, u
        log(
            f"{size} MiB round {rep + 1} {mode}: backup {b['seconds']:.2f} s "
            f"({b['archive_bytes'] / MiB:.0f} MiB archive, {b['cpu_s']:.2f} CPU-s), pass "
            f"{u['seconds']:.2f} s (Store.upload {u['upload_seconds']:.2f} s, "
            f"{u['cpu_s']:.2f} CPU-s), {u['maxrss_mib']:.0f} MiB peak"
        )
        if mode == "plaintext":
            o = obstore_put(ctx, archive, f"raw/{size}-{rep}.tar.gz")
            result["obstore put alone"] = o
            log(
                f"{size} MiB round {rep + 1}: obstore alone {o['seconds']:.2f} s, "
                f"{o['cpu_s']:.2f} CPU-s"
            )
        if mode == "age":
            shutil.rmtree(place / "backups")
    shutil.rmtree(archive.parent.parent)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1024", help="database MiB, comma-separated")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="2 and 8 MiB, one round, no cache")
    ap.add_argument("--work", type=Path, default=WORK / "offsite-e2e")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS-offsite.md")
    args = ap.parse_args()
    sizes = [2, 8] if args.quick else sorted(int(x) for x in args.sizes.split(","))
    reps = 1 if args.quick else args.reps
    work: Path = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    server = SeaweedServer(work / "weed")
    log("starting SeaweedFS")
    server.start()
    samples: dict[int, list[dict[str, dict[str, Any]]]] = {}
    load_start = os.getloadavg()[0]
    try:
        server.create_bucket("bench")
        identity = x25519.Identity.generate()
        ctx = {
            "server": server,
            "env": {**os.environ, **server.env(), "SIDECAR_LOG_FORMAT": "json"},
            "recipient": str(identity.to_public()),
            "weed": (server.process.pid,) if server.process else (),
        }
        dbs = {size: database(size, work, cache=not args.quick) for size in sizes}
        # untimed: SeaweedFS grows a new bucket's volumes on its first writes
        warm = {"src": str(dbs[sizes[0]]), "dest": "", "bucket": "bench"}
        warm |= {"endpoint": server.endpoint, "key": "raw/warm-up"}
        step(["-m", "bench.offsite_worker", "obstore-put", json.dumps(warm)], ctx["env"], ())
        for size in sizes:
            samples[size] = [round_of(ctx, size, rep, dbs[size], work) for rep in range(reps)]
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    block = render(samples, quick=args.quick, reps=reps, load=(load_start, os.getloadavg()[0]))
    existing = args.out.read_text() if args.out.exists() else ""
    args.out.write_text(splice(existing, block))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
