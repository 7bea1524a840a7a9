"""The daemon over thousands of archives: start time by number of policies, and the daemon's
memory while 16 socket `list` requests run at once (issue 13 item 9).

    python -m bench.catalog [--archives 5000] [--policies 2 20] [--tree PATH] [--work DIR]

Builds a backup directory of ``--archives`` archives: 20 real backup-sidecar archives (one per
policy ``p00``..``p19``) of a database with 300 tables (so each metadata member carries 300
row counts, as a real application's does), each hard-linked under distinct names (no disk cost;
every name is still opened and read on its own, and the catalog keys archives by name). Then,
for each policy count, starts `backup-sidecar run` (policies ``every: 1h`` with fresh archives:
nothing is due; health check hourly; metrics off; control socket on) and measures:

- **start s**: spawn to the ``daemon_started`` log line;
- **RSS after start / peak / after lists MiB**: the daemon's VmRSS once started, its VmHWM
  (peak) after 16 concurrent socket ``list`` requests, and its VmRSS once they are answered.

``--tree`` runs the daemon from another source tree (``PATH/daemon`` first on PYTHONPATH), to
measure the code before a change on the same directory. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from backup_sidecar.archiver import DatabaseSpec, create_backup

ROOT = Path(__file__).resolve().parent.parent
POLICIES = 20
TABLES = 300
LISTS = 16


def build_dir(work: Path, count: int) -> Path:
    """``work/archives_<count>``: ``count`` archives, reused when already built."""
    backup_dir = work / f"archives_{count}"
    done = backup_dir / ".built"
    if done.exists():
        return backup_dir
    shutil.rmtree(backup_dir, ignore_errors=True)
    backup_dir.mkdir(parents=True)
    db = work / "wide.db"
    if not db.exists():
        with sqlite3.connect(db) as con:
            for i in range(TABLES):
                con.execute(f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, v TEXT)")
                con.execute(f"INSERT INTO t{i} (v) VALUES ('x')")
    src = work / f"src_{count}"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir()
    now = datetime.now(UTC)
    originals = [
        create_backup(
            [DatabaseSpec("user", db)],
            backup_dir=src,
            name=f"p{i:02d}_orig",
            policy=f"p{i:02d}",
            now=now,
        ).path
        for i in range(POLICIES)
    ]
    for n in range(count):
        os.link(originals[n % POLICIES], backup_dir / f"p{n % POLICIES:02d}_{n:06d}.tar.gz")
    done.touch()
    return backup_dir


def _status(pid: int, key: str) -> int:
    """A VmRSS/VmHWM field of /proc/PID/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _list(sock_path: Path, sizes: list[int]) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(600)
        s.connect(str(sock_path))
        s.sendall(b'{"op":"list"}\n')
        got = 0
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
        sizes.append(got)


def run_daemon(
    work: Path, backup_dir: Path, policies: int, tree: Path | None
) -> dict[str, float | int]:
    """Start a daemon on ``backup_dir`` with ``policies`` policies; measure; stop it."""
    sock_dir = Path(tempfile.mkdtemp(prefix="bench-catalog-"))  # short: AF_UNIX paths < 108
    sock = sock_dir / "control.sock"
    user_db = work / "user.db"
    if not user_db.exists():
        sqlite3.connect(user_db).close()
    cfg = {
        "backup_dir": str(backup_dir),
        "databases": {"user": {"path": str(user_db)}},
        "policies": {f"p{i:02d}": {"every": "1h", "keep": 100000} for i in range(policies)},
        "health": {"interval": "1h"},
        "metrics": {"enabled": False},
        "control": {"socket": str(sock), "mode": "0600"},
    }
    config = work / f"sidecar-{policies}.yaml"
    config.write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    if tree is not None:
        env["PYTHONPATH"] = str(tree / "daemon")
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "backup_sidecar", "--config", str(config), "--log-format", "json",
         "run"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            if '"daemon_started"' in line:
                break
            if "Traceback" in line or '"level": "error"' in line:
                raise RuntimeError(line)
        start_s = time.monotonic() - started
        threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
        rss_start = _status(proc.pid, "VmRSS")
        sizes: list[int] = []
        threads = [threading.Thread(target=_list, args=(sock, sizes)) for _ in range(LISTS)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        lists_s = time.monotonic() - t0
        return {
            "archives": sum(1 for _ in backup_dir.glob("*.tar.gz")),
            "policies": policies,
            "start_s": round(start_s, 2),
            "rss_start_mib": rss_start // 1024,
            "rss_peak_mib": _status(proc.pid, "VmHWM") // 1024,
            "rss_after_mib": _status(proc.pid, "VmRSS") // 1024,
            "lists_s": round(lists_s, 2),
            "reply_bytes": max(sizes) if sizes else 0,
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        shutil.rmtree(sock_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archives", type=int, nargs="+", default=[5000])
    parser.add_argument("--policies", type=int, nargs="+", default=[2, 20])
    parser.add_argument("--tree", type=Path, help="source tree to run the daemon from")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "work" / "catalog")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    for count in args.archives:
        backup_dir = build_dir(args.work, count)
        for policies in args.policies:
            print(json.dumps(run_daemon(args.work, backup_dir, policies, args.tree)), flush=True)


if __name__ == "__main__":
    main()
