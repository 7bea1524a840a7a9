"""A stand-in for the application: commits one row per transaction until its stdin closes.

Usage: writer.py DB STATUS_FILE RATE [SEQ_LOG] (RATE: commits/s, 0 = as fast as possible).
Prints "ready" after the first commit, and at the end one JSON line:
{"commits": n, "errors": n, "max_latency_s": x, "p99_latency_s": x}.
STATUS_FILE always holds the number of commits made so far.

With SEQ_LOG, the k-th transaction writes ``at = SEQ_BASE + k`` (a value no clock gives) and,
once its COMMIT has returned, appends ``k`` to SEQ_LOG: every line there is a commit the
application saw succeed, which a test can then look for in the live database or a backup.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
import time
from pathlib import Path

SEQ_BASE = 10_000_000_000.0


def main() -> None:
    db, status, rate = sys.argv[1], sys.argv[2], float(sys.argv[3])
    seq_log = Path(sys.argv[4]).open("a", buffering=1) if len(sys.argv) > 4 else None  # noqa: SIM115
    seq = 0
    stop = threading.Event()

    def stop_at_end_of_input() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=stop_at_end_of_input, daemon=True).start()
    conn = sqlite3.connect(db, timeout=30)
    conn.execute("CREATE TABLE IF NOT EXISTS ticks (n INTEGER PRIMARY KEY, at REAL)")
    conn.commit()
    commits = errors = 0
    latencies: list[float] = []
    interval = 1.0 / rate if rate else 0.0
    next_at = time.monotonic()
    while not stop.is_set():
        t0 = time.monotonic()
        seq += 1
        at = SEQ_BASE + seq if seq_log else time.time()
        try:
            with conn:
                conn.execute("INSERT INTO ticks (at) VALUES (?)", (at,))
            commits += 1
            if seq_log:
                seq_log.write(f"{seq}\n")
        except sqlite3.Error as exc:
            errors += 1
            if errors <= 5:
                print(f"writer error: {exc}", file=sys.stderr)
        latencies.append(time.monotonic() - t0)
        tmp = Path(status + ".tmp")
        tmp.write_text(f"{commits}\n")
        tmp.replace(status)
        if commits == 1 and errors == 0:
            print("ready", flush=True)
        if interval:
            next_at += interval
            stop.wait(max(0.0, next_at - time.monotonic()))
    conn.close()
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else 0.0
    print(
        json.dumps(
            {
                "commits": commits,
                "errors": errors,
                "max_latency_s": max(latencies, default=0.0),
                "p99_latency_s": p99,
            }
        )
    )


if __name__ == "__main__":
    main()
