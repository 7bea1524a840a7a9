"""The unavoidable work of a verified backup, alone: a one-step backup-API snapshot and
``PRAGMA integrity_check`` of the copy. Prints the time of each step as JSON.

    python -m bench.floor SRC.db DEST.db                # snapshot + integrity_check (the floor)
    python -m bench.floor SRC.db DEST.db --snapshot-only
    python -m bench.floor --check-only FILE.db          # integrity_check alone
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path


def snapshot(src_path: Path, dest: Path) -> float:
    t0 = time.monotonic()
    src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(dest)
    dst.execute("PRAGMA synchronous=OFF")  # a scratch copy need not reach the disk
    src.backup(dst, pages=-1, sleep=0.05)
    dst.execute("PRAGMA journal_mode=DELETE").fetchone()
    dst.close()
    src.close()
    return time.monotonic() - t0


def integrity_check(path: Path) -> tuple[float, str]:
    t0 = time.monotonic()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rows = conn.execute("PRAGMA integrity_check").fetchall()
    conn.close()
    return time.monotonic() - t0, "; ".join(str(r[0]) for r in rows)


def main() -> None:
    args = sys.argv[1:]
    out: dict[str, object] = {}
    if args[0] == "--check-only":
        out["check_s"], out["result"] = integrity_check(Path(args[1]))
    else:
        out["snapshot_s"] = snapshot(Path(args[0]), Path(args[1]))
        if "--snapshot-only" not in args:
            out["check_s"], out["result"] = integrity_check(Path(args[1]))
    print(json.dumps(out))
    if out.get("result", "ok") != "ok":
        sys.exit(1)


if __name__ == "__main__":
    main()
