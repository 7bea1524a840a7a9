"""Where backup, verify and restore spend their time: each archiver step timed alone, in one
process, on a benchmark database (a profile, not a target; the archiver is not modified).

    python -m bench.phases DB [--work DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from isal import isal_zlib

from backup_sidecar.archiver.backup import create_backup
from backup_sidecar.archiver.livecopy import LiveWrite
from backup_sidecar.archiver.livewrite import write_locked
from backup_sidecar.archiver.model import DatabaseSpec
from backup_sidecar.archiver.packing import pack_databases
from backup_sidecar.archiver.snapshot import take_snapshot
from backup_sidecar.archiver.sqlitefacts import collect_facts, integrity_check
from backup_sidecar.archiver.verify import verify_archive


def _t(label: str, res: dict[str, float], fn, *a, **kw):  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    result = fn(*a, **kw)
    res[label] = round(time.monotonic() - t0, 3)
    print(f"{label:55s} {res[label]:8.2f} s", flush=True)
    return result


def _read_all(path: Path, sink) -> None:  # type: ignore[no-untyped-def]
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            sink(chunk)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("db", type=Path)
    ap.add_argument("--work", type=Path, default=Path("bench/work/phases"))
    args = ap.parse_args()
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    spec = DatabaseSpec("user", args.db.resolve())
    now = datetime.now(UTC)
    r: dict[str, float] = {}
    cmd = [sys.executable, "-m", "backup_sidecar", "--version"]
    _t("CLI start-up (backup-sidecar --version)", r, subprocess.run, cmd, capture_output=True)
    snap = _t(
        "snapshot (backup API, one step)",
        r,
        take_snapshot,
        spec,
        dest=work / "s.db",
        lock_timeout=30,
    )
    _t("integrity_check of the copy", r, integrity_check, snap.staged)
    _t("collect_facts (row counts etc.)", r, collect_facts, snap.staged)
    _t("sha256 alone (1 MiB reads)", r, _read_all, snap.staged, hashlib.sha256().update)
    comp = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)
    _t("isal level-1 compress alone", r, _read_all, snap.staged, comp.compress)
    _t(
        "hash + compress + write (pack_databases)",
        r,
        pack_databases,
        [snap],
        out=work / "d.gz",
        level=1,
        now=now,
        progress=lambda *a: None,
        should_stop=lambda: False,
    )
    backups = work / "backups"
    backups.mkdir()
    info = _t(
        "create_backup (whole, in-process)",
        r,
        create_backup,
        [spec],
        backup_dir=backups,
        name="p",
        policy="manual",
        now=now,
    )
    stage = work / "vstage"
    stage.mkdir()
    _t(
        "verify: extract + sha256 (integrity=False)",
        r,
        verify_archive,
        info.path,
        staging=stage,
        integrity=False,
    )
    shutil.rmtree(stage)
    stage.mkdir()
    v = _t("verify_archive (whole)", r, verify_archive, info.path, staging=stage)
    live = work / "live.db"
    shutil.copyfile(args.db, live)
    rescue = work / "rescue"
    rescue.mkdir()
    job = LiveWrite("user", live.resolve(), v.staged["user"], rescue / "user_data.db")
    _t(
        "restore step alone (save the pre-image, write the live file)",
        r,
        write_locked,
        [job],
        lock_timeout=30,
    )
    print(json.dumps(r))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
