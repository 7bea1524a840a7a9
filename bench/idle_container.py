"""The idle container: the daemon with two policies over small databases, nothing due, and its
HEALTHCHECK (`backup-sidecar healthcheck`, the installed script, every 30 s) as the image runs
them; the daemon's CPU (/proc) plus the healthchecks' (rusage), per minute, against the
0.5 CPU-s/min target of issue 17. `python -m bench.run` measures the same in its idle step;
this runs it alone (no Docker engine is needed: these are the image's two commands).

    python -m bench.idle_container                 # 300 s
    python -m bench.idle_container --seconds 90    # quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from bench.methods import Workspace
from bench.render import idle_container_target
from bench.run import WORK, cached_db, copy_db
from bench.scaling import measure_idle, start_daemon


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    args = parser.parse_args(argv)
    ws = Workspace(WORK / f"idle_container_{os.getpid()}")
    ws.root.mkdir(parents=True)
    try:
        tiny = copy_db(cached_db(1, 1), ws.root / "tiny.db")
        user = copy_db(tiny, ws.root / "user.db")
        proc, root = start_daemon(ws, "tiny", user_db=user, arrow_db=tiny)
        settle = min(20.0, args.seconds / 4)
        (idle,) = measure_idle(
            {"tiny": (proc, user.stat().st_size)},
            seconds=args.seconds,
            settle=settle,
            checked={"tiny": root / "sidecar.yaml"},
        )
        target = idle_container_target(idle)
        load = Path("/proc/loadavg").read_text().split()[:3]
        print(json.dumps({"idle": vars(idle), "loadavg": load}, indent=2))
        print(f"| {target.name} | {target.measured} | {target.limit} | "
              f"{'PASS' if target.ok else '**FAIL**'} |")  # fmt: skip
    finally:
        shutil.rmtree(ws.root, ignore_errors=True)


if __name__ == "__main__":
    main()
