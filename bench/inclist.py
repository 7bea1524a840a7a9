"""The CLI on a page store of a day of `every: 1m` backups: `list` and `backup --policy P`.

    python -m bench.inclist build [--size-mib 128] [--real 30] [--total 1440] [--work DIR]
    python -m bench.inclist time [--work DIR] [--src DAEMON_DIR] [--reps 3] [--label L]

``build`` makes a database (WAL), backs it up ``--real`` times through the real incremental
job (``jobs.run_backup``, pages read in a child, `check: quick`), each after a scattered
round of updates (random rows all over the file, so the chain's head has many short runs, as
a day of writes leaves it), then adds backups up to ``--total`` by copying the head's
manifest under the names, sequences and times the job would have given the minutely backups
that followed (each a valid manifest of the same pages: an unchanged database's backup).

``time`` runs the real CLI (``python -m backup_sidecar`` from ``--src``, default this
checkout's daemon/) against a copy of the built store: `list --json`, `backup --policy
minutely --json` and `prune --policy minutely --keep 1400 --json`, ``--reps`` times each,
and prints wall and CPU per command. Point ``--src``
at another checkout's daemon/ to time the code before a change on the same store.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from backup_sidecar import jobs
from backup_sidecar.archiver import DatabaseSpec
from backup_sidecar.archiver.manifest import default_name
from backup_sidecar.archiver.sequence import next_sequence
from backup_sidecar.jobs.runtime import IncrementalSpec
from backup_sidecar.pagestore import fsio
from backup_sidecar.pagestore.manifest import manifest_file
from backup_sidecar.pagestore.rebuild import load_manifest
from bench.proc import run
from bench.run import REPO, WORK, log

POLICY = "minutely"
#: Each timed in turn: the prune deletes the backups past 1,400 (then one a round) and runs
#: the store's GC, which needs every kept manifest's packs.
COMMANDS = (
    ["list"],
    ["backup", "--policy", POLICY],
    ["prune", "--policy", POLICY, "--keep", "1400"],
)
START = datetime(2026, 12, 6, 0, 0, tzinfo=UTC)
_ROW = 200


def make_db(path: Path, size_mib: int, seed: int) -> int:
    """A WAL database of about ``size_mib`` MiB of ``_ROW``-byte rows; the row count."""
    rng = random.Random(seed)
    rows = size_mib * (1 << 20) // (_ROW + 40)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=wal")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL)")
        conn.executemany(
            "INSERT INTO t VALUES (?, ?)", ((i, rng.randbytes(_ROW)) for i in range(rows))
        )
    return rows


def scatter(path: Path, rows: int, n: int, rng: random.Random) -> None:
    """``n`` random rows rewritten: changed pages all over the file."""
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "UPDATE t SET v = ? WHERE id = ?",
            ((rng.randbytes(_ROW), rng.randrange(rows)) for _ in range(n)),
        )


def config(work: Path, db: Path) -> Path:
    path = work / "sidecar.yaml"
    path.write_text(
        f"backup_dir: {work / 'backups'}\n"
        f"databases:\n  user: {{path: {db}}}\n"
        "policies:\n"
        f"  {POLICY}: {{every: 1m, keep: 100000, mode: incremental, check: quick}}\n"
    )
    return path


def build(work: Path, *, size_mib: int, real: int, total: int, seed: int) -> None:
    if work.exists():
        shutil.rmtree(work)
    (work / "backups").mkdir(parents=True)
    db = work / "user.db"
    rows = make_db(db, size_mib, seed)
    config(work, db)
    rng = random.Random(seed + 1)
    rt = jobs.Runtime(
        backup_dir=work / "backups",
        databases={"user": DatabaseSpec("user", db)},
        keep={POLICY: 100000},
        incremental={POLICY: IncrementalSpec(check="quick")},
    )
    info = None
    for i in range(real):
        if i:
            scatter(db, rows, max(rows // 400, 50), rng)
        now = START + timedelta(minutes=i)
        rt = dataclasses.replace(rt, clock=lambda now=now: now)
        info = jobs.run_backup(rt, policy=POLICY)
        log(f"real backup {i + 1}/{real}: {info.name} ({info.size_bytes} bytes)")
    assert info is not None
    store = work / "backups" / "pages" / "user"
    with fsio.open_store(store, exclusive=True, timeout_s=30) as dirs:
        head = load_manifest(dirs, info.name)
        chain = dict(head.metadata["chain"])
        for i in range(real, total):
            now = START + timedelta(minutes=i)
            name = default_name(POLICY, now)
            sequence = next_sequence(work / "backups")
            chain["length"] = int(chain["length"]) + 1
            meta = {**head.metadata, "backup_name": name, "sequence": sequence, "chain": chain}
            copy = dataclasses.replace(
                head,
                name=name,
                created_at=now.isoformat(),
                metadata=meta,
                stats={**head.stats, "pages_new": 0, "packs_written": 0, "bytes_stored": 0},
            )
            fsio.write_file(
                dirs.manifests_fd,
                manifest_file(name),
                copy.to_bytes(),
                where=dirs.manifests,
                replace=False,
            )
    runs = len(head.runs)
    size = (store / "manifests" / manifest_file(info.name)).stat().st_size
    log(f"{total} backups; the head has {runs} runs, its manifest {size} bytes")
    (work / "built.json").write_text(
        json.dumps({"size_mib": size_mib, "real": real, "total": total, "runs": runs})
    )


def time_cli(work: Path, *, src: Path, reps: int, label: str) -> list[dict[str, object]]:
    """Each command ``reps`` times on a fresh copy of the built store (so every variant
    starts from the same files); one row per command and repetition."""
    trial = work.with_name(work.name + "-trial")
    if trial.exists():
        shutil.rmtree(trial)
    shutil.copytree(work, trial, symlinks=True)
    cfg = config(trial, trial / "user.db")
    env = {"SIDECAR_CONFIG": str(cfg), "SIDECAR_LOG_FORMAT": "json", "PYTHONPATH": str(src)}
    out = []
    for rep in range(reps):
        for args in COMMANDS:
            m = run([sys.executable, "-m", "backup_sidecar", *args, "--json"], env=env)
            if m.returncode != 0:
                raise RuntimeError(f"{args}: {m.stderr.strip()[-2000:]}")
            row = {
                "label": label,
                "command": " ".join(args),
                "rep": rep,
                "wall_s": round(m.wall_s, 3),
                "cpu_s": round(m.cpu_s, 3),
                "loadavg": m.loadavg,
            }
            if args == ["list"]:
                row["listed"] = len(json.loads(m.stdout))
            log(json.dumps(row))
            out.append(row)
    shutil.rmtree(trial)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["build", "time"])
    ap.add_argument("--work", type=Path, default=WORK / "inclist")
    ap.add_argument("--size-mib", type=int, default=128)
    ap.add_argument("--real", type=int, default=30)
    ap.add_argument("--total", type=int, default=1440)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--src", type=Path, default=REPO / "daemon")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--label", default="this checkout")
    a = ap.parse_args()
    if a.step == "build":
        build(a.work, size_mib=a.size_mib, real=a.real, total=a.total, seed=a.seed)
    else:
        rows = time_cli(a.work, src=a.src, reps=a.reps, label=a.label)
        with (a.work.parent / "inclist-times.jsonl").open("a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
