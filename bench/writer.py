"""The application stand-in for the writer-impact benchmark: small commits at a fixed rate.

    python -m bench.writer DB OUT.json RATE

Commits one row per transaction (like tests/support/writer.py) until stdin closes, then writes
OUT.json with every commit's start (CLOCK_MONOTONIC, shared by all processes) and latency, so
the harness can take the commits that started while a backup ran.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
import time
from pathlib import Path


def main() -> None:
    db, out, rate = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    conn = sqlite3.connect(db, timeout=60)
    conn.execute("CREATE TABLE IF NOT EXISTS bench_ticks (n INTEGER PRIMARY KEY, at REAL)")
    conn.commit()
    starts: list[float] = []
    latencies: list[float] = []
    errors: list[str] = []
    interval = 1.0 / rate
    next_at = time.monotonic()
    print("ready", flush=True)
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            with conn:
                conn.execute("INSERT INTO bench_ticks (at) VALUES (?)", (time.time(),))
        except sqlite3.Error as exc:
            errors.append(str(exc))
        starts.append(t0)
        latencies.append(time.monotonic() - t0)
        next_at = max(next_at + interval, time.monotonic() - interval)
        stop.wait(max(0.0, next_at - time.monotonic()))
    conn.close()
    out.write_text(
        json.dumps(
            {
                "starts": starts,
                "latencies": latencies,
                "errors": errors[:20],
                "error_count": len(errors),
            }
        )
    )


if __name__ == "__main__":
    main()
