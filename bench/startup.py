"""Start-up of the commands that must be instant, against `python -c "import click"`.

`--version`, `healthcheck` and `ctl ping` (the container's HEALTHCHECK and liveness probes)
are run as their own processes, interleaved with the baseline in one run so machine load
affects both alike; prints the median wall and CPU time of each and its ratios to the
baseline as JSON.
As in the container, each command is the installed `backup-sidecar` script (the image's
HEALTHCHECK runs `backup-sidecar healthcheck`; `--entry module` runs `python -m
backup_sidecar`, which also imports runpy), and the configuration is a YAML file named by
`SIDECAR_CONFIG`. No daemon is needed: `healthcheck` and `ctl ping` fail fast (nothing
listening) after doing all their
start-up work, which is what is measured.

Compile the bytecode first (`python -m compileall -q daemon .venv/lib`) where
PYTHONDONTWRITEBYTECODE is set, as the image does (UV_COMPILE_BYTECODE=1).

    python -m bench.startup                # 21 runs of each
    python -m bench.startup --runs 3       # quick (the test runs this)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASELINE = ("import click",)
COMMANDS = {
    "--version": ("--version",), "healthcheck": ("healthcheck",), "ctl ping": ("ctl", "ping")
}  # fmt: skip
#: The target of issue 17: each command at most this many times the baseline.
TARGET_RATIO = 1.5


def _env(socket_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    config = socket_dir / "sidecar.yaml"
    config.write_text(  # port 9 (discard): refused at once
        f"metrics: {{host: 127.0.0.1, port: 9}}\ncontrol: {{socket: {socket_dir / 'none.sock'}}}\n"
    )
    env["SIDECAR_CONFIG"] = str(config)
    return env


def _time(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run: CPU time is what a healthcheck every
    30 s costs the container, and is less disturbed than wall time by other load."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, capture_output=True, check=False, timeout=60)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def _entry(entry: str) -> list[str]:
    """How the commands are started: the installed script (as the container), else -m."""
    script = Path(sys.executable).with_name("backup-sidecar")
    if entry == "script" and script.is_file():
        return [sys.executable, str(script)]
    return [sys.executable, "-m", "backup_sidecar"]


def measure(runs: int, entry: str = "script") -> dict[str, object]:
    """Median wall and CPU seconds of the baseline and of each command over ``runs``
    interleaved rounds, and each command's ratios to the baseline."""
    with tempfile.TemporaryDirectory() as tmp:
        env = _env(Path(tmp))
        base = [sys.executable, "-c", *BASELINE]
        cmds = {n: [*_entry(entry), *a] for n, a in COMMANDS.items()}
        samples: dict[str, list[tuple[float, float]]] = {"baseline": [], **{n: [] for n in cmds}}
        for _ in range(runs):
            samples["baseline"].append(_time(base, env))
            for name, argv in cmds.items():
                samples[name].append(_time(argv, env))
    wall = {name: statistics.median(w for w, _ in runs_) for name, runs_ in samples.items()}
    cpu = {name: statistics.median(c for _, c in runs_) for name, runs_ in samples.items()}
    return {
        "runs": runs,
        "entry": " ".join(Path(part).name for part in _entry(entry)),
        "baseline": {"wall_s": round(wall["baseline"], 4), "cpu_s": round(cpu["baseline"], 4)},
        "commands": {
            name: {
                "wall_s": round(wall[name], 4),
                "cpu_s": round(cpu[name], 4),
                "wall_ratio": round(wall[name] / wall["baseline"], 2),
                "cpu_ratio": round(cpu[name] / cpu["baseline"], 2),
            }
            for name in cmds
        },
        "target_ratio": TARGET_RATIO,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--entry", choices=("script", "module"), default="script")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.runs, args.entry), indent=2))


if __name__ == "__main__":
    main()
