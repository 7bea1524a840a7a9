"""Writer impact: the application's commit latency while each backup kind runs.

A writer process (bench/writer.py) commits one small transaction at a fixed rate; the backup
runs in the middle of its life; the commits that started between the backup's start and end
give p50/p99/max latency and errors, compared with the same writer with no backup running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.methods import Sample, Workspace

RATE = 200.0
_SETTLE_S = 1.0


@dataclass
class Impact:
    kind: str
    journal: str
    commits: int
    errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    backup_wall_s: float
    outcome: str
    noise_cores: float
    info: dict[str, float | str]
    run: int = 1


def _stats(lat: list[float]) -> tuple[float, float, float]:
    if not lat:
        return 0.0, 0.0, 0.0
    s = sorted(lat)
    p50 = s[len(s) // 2]
    p99 = s[min(len(s) - 1, int(len(s) * 0.99))]
    return p50 * 1e3, p99 * 1e3, s[-1] * 1e3


def _outcome(sample: Sample | None) -> str:
    if sample is None or (sample.m.returncode == 0 and not sample.m.timed_out):
        return "ok"
    if sample.m.timed_out:
        return "**killed at timeout**"
    lines = sample.m.stderr.strip().splitlines() or ["?"]
    return f"**failed**: {lines[-1][:80]}"


def _start_writer(db: Path, out: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.writer", str(db), str(out), str(RATE)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("writer did not start")
    return proc


def _stop_writer(proc: subprocess.Popen[str], out: Path) -> dict[str, object]:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=120)
    data: dict[str, object] = json.loads(out.read_text())
    out.unlink()
    return data


def with_writer(
    ws: Workspace,
    db: Path,
    *,
    kind: str,
    journal: str,
    action: Callable[[Workspace], Sample] | None,
    idle_s: float = 10.0,
    run: int = 1,
) -> Impact:
    """Run ``action`` (None: just wait ``idle_s``) while a writer commits into ``db``."""
    out = ws.root / "writer.json"
    # The previous run's dirty pages are flushed here, before the writer starts, so neither
    # that flush nor a sync of the writer's own settling commits falls inside the window.
    os.sync()
    proc = _start_writer(db, out)
    try:
        time.sleep(_SETTLE_S)
        t0 = time.monotonic()
        sample = None
        if action is not None:
            ws.also_ours, ws.tolerant, ws.synced = (proc.pid,), True, True
            try:
                sample = action(ws)
            finally:
                ws.also_ours, ws.tolerant, ws.synced = (), False, False
        else:
            time.sleep(idle_s)
        t1 = time.monotonic()
        time.sleep(_SETTLE_S)
    finally:
        data = _stop_writer(proc, out)
    starts: list[float] = data["starts"]  # type: ignore[assignment]
    lats: list[float] = data["latencies"]  # type: ignore[assignment]
    window = [lat for s, lat in zip(starts, lats, strict=True) if t0 <= s <= t1]
    # A commit that started just before the backup and stalled through it counts too.
    window += [lat for s, lat in zip(starts, lats, strict=True) if s < t0 and s + lat > t0]
    p50, p99, mx = _stats(window)
    return Impact(
        kind=kind,
        journal=journal,
        commits=len(window),
        errors=int(data["error_count"]),  # type: ignore[call-overload]
        p50_ms=p50,
        p99_ms=p99,
        max_ms=mx,
        backup_wall_s=t1 - t0,
        outcome=_outcome(sample),
        noise_cores=sample.m.noise_cores if sample else 0.0,
        info=dict(sample.info) if sample else {},
        run=run,
    )
