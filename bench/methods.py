"""Every backup method of the benchmark as one measured process over the same database.

Each function runs one repetition and returns a :class:`Sample`: the process measurement plus
what the method produced (archive bytes, restic's bytes added, the floor's step times).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from backup_sidecar.archiver.catalog import read_manifest
from bench.proc import Measurement, run

PY = sys.executable
RESTIC_ENV = {"RESTIC_PASSWORD": "bench", "RESTIC_CACHE_DIR": ""}


@dataclass
class Sample:
    method: str
    m: Measurement
    bytes: int = 0
    info: dict[str, float | str] = field(default_factory=dict)


def _check(m: Measurement, what: str, *, tolerant: bool) -> Measurement:
    if m.returncode != 0 and not m.timed_out and not tolerant:
        raise RuntimeError(f"{what} failed ({m.returncode}): {m.stderr.strip()[-2000:]}")
    return m


@dataclass
class Workspace:
    """The files of one run under ``root`` (bench/work/...)."""

    root: Path
    timeout: float | None = None
    also_ours: tuple[int, ...] = ()
    #: Record a failing command instead of raising (a method failing under a writer is a result).
    tolerant: bool = False
    #: The disk was flushed before a writer's measured window opened (see impact.with_writer).
    synced: bool = False

    def dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def measure(self, cmd: list[str], what: str, env: dict[str, str] | None = None) -> Measurement:
        m = run(cmd, env=env, timeout=self.timeout, also_ours=self.also_ours, sync=not self.synced)
        return _check(m, what, tolerant=self.tolerant)

    def sidecar_env(self, db: Path, backup_dir: Path) -> dict[str, str]:
        return {
            "USER_DATABASE_PATH": str(db),
            "ARROW_DATABASE_PATH": str(self.root / "no-arrow.db"),
            "BACKUP_DIR": str(backup_dir),
            "SIDECAR_LOG_FORMAT": "json",
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        }


def seed(ws: Workspace, db: Path, rep: int) -> Sample:
    out = ws.dir("seed") / f"seed_{rep}.tar.gz"
    out.unlink(missing_ok=True)
    m = ws.measure([PY, "-m", "bench.seed_method", str(out), f"user={db}"], "seed method")
    size = out.stat().st_size if out.exists() else 0
    out.unlink(missing_ok=True)
    return Sample("seed method", m, size)


def sqlite_cli(ws: Workspace, db: Path, rep: int) -> Sample:
    work = ws.dir(f"cli_{rep}")
    copy, out = work / "user_data.db", work / "out.tar.gz"
    script = f'sqlite3 "{db}" ".backup \'{copy}\'" && tar czf "{out}" -C "{work}" user_data.db'
    m = ws.measure(["sh", "-c", script], "sqlite3 .backup + tar czf")
    size = out.stat().st_size if out.exists() else 0
    shutil.rmtree(work)
    return Sample("sqlite3 CLI + tar czf", m, size)


def floor(ws: Workspace, db: Path, rep: int, *, keep: bool = False) -> Sample:
    dest = ws.dir("floor") / f"snap_{rep}.db"
    dest.unlink(missing_ok=True)
    m = ws.measure([PY, "-m", "bench.floor", str(db), str(dest)], "floor")
    info = json.loads(m.stdout) if m.stdout.strip() else {}
    if not keep:
        dest.unlink(missing_ok=True)
    return Sample("floor (snapshot + integrity_check)", m, 0, info)


def restic_init(ws: Workspace, rep: int) -> Path:
    repo = ws.root / f"restic_{rep}"
    shutil.rmtree(repo, ignore_errors=True)
    subprocess.run(
        ["restic", "-r", str(repo), "init"],
        env={**os.environ, **RESTIC_ENV},
        check=True,
        capture_output=True,
    )
    return repo


def restic(ws: Workspace, db: Path, repo: Path, label: str) -> Sample:
    """Snapshot with the backup API, then ``restic backup`` of the copy, as one process."""
    snap_dir = ws.dir(f"{repo.name}_snap")
    snap = snap_dir / "user_data.db"
    snap.unlink(missing_ok=True)
    script = (
        f'"{PY}" -m bench.floor "{db}" "{snap}" --snapshot-only >/dev/null && '
        f'restic -r "{repo}" backup --json --host bench "{snap_dir}"'
    )
    m = ws.measure(["sh", "-c", script], f"restic {label}", env=RESTIC_ENV)
    summary = {}
    for line in m.stdout.splitlines():
        if '"summary"' in line:
            summary = json.loads(line)
    info = {
        "data_added": summary.get("data_added", 0),
        "repo_bytes": _du(repo),
    }
    return Sample(f"restic ({label})", m, int(info["data_added"]), info)


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def sidecar_backup(
    ws: Workspace, db: Path, backup_dir: Path, name: str, *, threads: int | None = None
) -> Sample:
    """The default backup (``cpu_threads: auto``), or with ``threads`` set explicitly."""
    env = ws.sidecar_env(db, backup_dir)
    label = "backup-sidecar backup"
    if threads is not None:
        env["SIDECAR_CPU_THREADS"] = str(threads)
        label += f" (cpu_threads: {threads})"
    cmd = [PY, "-m", "backup_sidecar", "backup", "--user-db-only", "--name", name, "--json"]
    m = ws.measure(cmd, label, env)
    if m.returncode != 0:
        return Sample(label, m)
    out = json.loads(m.stdout)
    # How long its one-step snapshot read-locked the database, as the archive records it.
    lock_s = read_manifest(Path(out["path"])).databases["user"].snapshot_seconds
    return Sample(label, m, out["size_bytes"], {"snapshot_s": lock_s or 0.0})


def sidecar_verify(ws: Workspace, db: Path, backup_dir: Path, name: str) -> Sample:
    env = ws.sidecar_env(db, backup_dir)
    m = ws.measure([PY, "-m", "backup_sidecar", "verify", name, "--json"], "verify", env)
    return Sample("backup-sidecar verify", m)


def sidecar_restore(ws: Workspace, live: Path, backup_dir: Path, name: str) -> Sample:
    env = ws.sidecar_env(live, backup_dir)
    cmd = [PY, "-m", "backup_sidecar", "restore", name, "--force", "--json"]
    m = ws.measure(cmd, "restore", env)
    pre = json.loads(m.stdout).get("pre_restore_archive")
    if pre:
        (backup_dir / f"{pre}.tar.gz").unlink(missing_ok=True)
    return Sample("backup-sidecar restore --force (safe restore)", m)


def decompress_isal(ws: Workspace, archive: Path) -> Sample:
    script = f'"{PY}" -m isal.igzip -d -c "{archive}" > /dev/null'
    return Sample("decompression alone (isal)", ws.measure(["sh", "-c", script], "igzip -d"))


def decompress_gzip(ws: Workspace, archive: Path) -> Sample:
    script = f'gzip -d -c "{archive}" > /dev/null'
    return Sample("decompression alone (GNU gzip)", ws.measure(["sh", "-c", script], "gzip -d"))


def integrity_alone(ws: Workspace, staged: Path) -> Sample:
    m = ws.measure([PY, "-m", "bench.floor", "--check-only", str(staged)], "integrity_check")
    return Sample("integrity_check alone", m, 0, json.loads(m.stdout))
