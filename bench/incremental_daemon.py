"""Row 4 of bench/incremental.py: `backup-sidecar run` with an `every: 1m` incremental policy
while bench.writer commits at 200/s into the same database.

One writer runs throughout: a baseline window with no daemon, then the daemon (its first
scheduled backup done, the measured window after it), then a second baseline after the
daemon stopped. The daemon's configuration is an operator's (the README's example policy,
health defaults) except for the places that must not collide with other processes on the
machine (metrics port, control socket) and, in --quick only, the interval.
Before the daemon starts, one CLI backup of the policy is made and verified, so the
chain-head check (`head_check: 1d`) is not due in the window: the window is the steady state,
not the once-a-day check.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.impact import RATE, _start_writer, _stats, _stop_writer
from bench.methods import PY
from bench.proc import pid_cpu_s
from bench.run import REPO, log
from bench.scaling import _free_port


def _config(root: Path, db: Path, every_s: int) -> Path:
    every = f"{every_s // 60}m" if every_s % 60 == 0 else f"{every_s}s"
    config = root / "sidecar.yaml"
    config.write_text(
        f"backup_dir: {root / 'backups'}\n"
        f"databases:\n  user: {{path: {db}}}\n"
        "policies:\n"
        f"  minutely: {{every: {every}, keep: 1440, mode: incremental, check: quick,"
        " head_check: 1d, rebase: {after: 1d, stored_fraction: 0.5}}\n"
        f"metrics: {{host: 127.0.0.1, port: {_free_port()}}}\n"
        f"control: {{socket: {root / 'control.sock'}}}\n"
    )
    return config


def _events(log_path: Path) -> list[dict[str, Any]]:
    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _wait_for(log_path: Path, event: str, count: int, deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if sum(e.get("event") == event for e in _events(log_path)) >= count:
            return
        time.sleep(0.5)
    raise RuntimeError(f"no {count} x {event} in {deadline_s} s: {log_path.read_text()[-2000:]}")


def measure(
    db: Path, root: Path, *, every_s: int, window_s: float, baseline_s: float
) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    config = _config(root, db, every_s)
    (root / "backups").mkdir(exist_ok=True)
    env = {
        **os.environ,
        "SIDECAR_CONFIG": str(config),
        "SIDECAR_LOG_FORMAT": "json",
        "PYTHONPATH": str(REPO),
    }
    for var in ("USER_DATABASE_PATH", "ARROW_DATABASE_PATH", "BACKUP_DIR"):
        env.pop(var, None)
    cli = [PY, "-m", "backup_sidecar"]
    first = subprocess.run(
        [*cli, "backup", "--policy", "minutely", "--json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    subprocess.run(
        [*cli, "verify", json.loads(first.stdout)["name"], "--json"],
        env=env,
        check=True,
        capture_output=True,
    )
    writer_out = root / "writer.json"
    os.sync()
    writer = _start_writer(db, writer_out)
    daemon = None
    try:
        log(f"daemon row: baseline {baseline_s:.0f} s")
        b0 = time.monotonic()
        time.sleep(baseline_s)  # the writer's own pace: nothing to poll, a window to sample
        b1 = time.monotonic()
        daemon_log = root / "daemon.log"
        with daemon_log.open("wb") as out:
            daemon = subprocess.Popen(
                [*cli, "run"],
                env=env,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        _wait_for(daemon_log, "backup_completed", 1, every_s * 3 + 120)
        log(f"daemon row: first scheduled backup done; window {window_s:.0f} s")
        done0 = sum(e.get("event") == "backup_completed" for e in _events(daemon_log))
        cpu0, w0 = pid_cpu_s(daemon.pid), time.monotonic()
        time.sleep(window_s)  # a measured window of the daemon's own schedule
        cpu1, w1 = pid_cpu_s(daemon.pid), time.monotonic()
        events = _events(daemon_log)
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=120)
        log(f"daemon row: second baseline {baseline_s:.0f} s")
        c0 = time.monotonic()
        time.sleep(baseline_s)
        c1 = time.monotonic()
    finally:
        if daemon is not None and daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        data = _stop_writer(writer, writer_out)
    starts: list[float] = data["starts"]  # type: ignore[assignment]
    lats: list[float] = data["latencies"]  # type: ignore[assignment]

    def window(t0: float, t1: float) -> list[float]:
        return [lat for s, lat in zip(starts, lats, strict=True) if t0 <= s <= t1]

    base = window(b0, b1) + window(c0, c1)
    during = window(w0, w1)
    completed = [e for e in events if e.get("event") == "backup_completed"]
    failed = [e for e in events if e.get("event") == "backup_failed" or e.get("level") == "error"]
    return {
        "every_s": every_s,
        "rate": RATE,
        "window_s": w1 - w0,
        "backups_in_window": len(completed) - done0,
        "backups_total": len(completed),
        "durations_s": [e.get("duration_s") for e in completed],
        "daemon_errors": len(failed),
        "daemon_error_lines": [str(e)[:300] for e in failed[:5]],
        "writer_errors": int(data["error_count"]),  # type: ignore[call-overload]
        "cpu_s": cpu1 - cpu0,
        "cpu_fraction": (cpu1 - cpu0) / (w1 - w0),
        "baseline": dict(zip(("p50", "p99", "max"), _stats(base), strict=True)),
        "baseline_commits": len(base),
        "during": dict(zip(("p50", "p99", "max"), _stats(during), strict=True)),
        "during_commits": len(during),
    }
