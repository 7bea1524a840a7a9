"""Scaling: `list` over many archives of two sizes, and the daemon idling with two policies
(and, for the idle container, its HEALTHCHECK run every 30 s as Docker would)."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.methods import PY, Workspace
from bench.proc import pid_cpu_s


def list_dir(ws: Workspace, archive: Path, *, count: int, label: str, link: bool) -> Path:
    """A backup directory holding ``count`` copies of ``archive`` under distinct names.

    `list` never checks a file name against its metadata. Large archives are hard links (one
    inode, no disk cost); each is still opened and read through its own name.
    """
    d = ws.root / f"list_{label}_{count}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    for i in range(count):
        dest = d / f"manual_{i:05d}.tar.gz"
        if link:
            os.link(archive, dest)
        else:
            shutil.copyfile(archive, dest)
    return d


@dataclass
class Idle:
    label: str
    seconds: float
    startup_cpu_s: float
    cpu_s: float
    cpu_s_per_min: float
    rss_kib_max: int
    rss_kib_end: int
    db_bytes: int
    #: `backup-sidecar healthcheck` runs against this daemon in the window, and their CPU.
    healthchecks: int = 0
    healthcheck_cpu_s: float = 0.0

    @property
    def container_cpu_s_per_min(self) -> float:
        """The idle container's CPU: the daemon's plus its HEALTHCHECK's, per minute."""
        return (self.cpu_s + self.healthcheck_cpu_s) / self.seconds * 60


#: The Dockerfile's `HEALTHCHECK --interval`.
HEALTHCHECK_INTERVAL_S = 30.0


def healthcheck(config: Path) -> float:
    """Run `backup-sidecar healthcheck` as the image's HEALTHCHECK does (the installed script,
    the configuration named by SIDECAR_CONFIG); its CPU seconds (user + system). A failing
    check stops the measurement: the daemon it measures is not healthy."""
    script = Path(PY).with_name("backup-sidecar")
    argv = [PY, str(script)] if script.is_file() else [PY, "-m", "backup_sidecar"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env["SIDECAR_CONFIG"] = str(config)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [*argv, "healthcheck"], env=env, capture_output=True, timeout=10, check=False
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"healthcheck failed: {done.stdout!r} {done.stderr!r}")
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start_daemon(
    ws: Workspace, label: str, *, user_db: Path, arrow_db: Path
) -> tuple[subprocess.Popen[bytes], Path]:
    """A daemon with a `daily` cron and a `weekly` policy whose archives are already fresh, so
    nothing is due: what it spends is its idle cost (scheduler, health watcher, sockets)."""
    root = ws.dir(f"idle_{label}")
    backups = root / "backups"
    shutil.rmtree(backups, ignore_errors=True)
    backups.mkdir()
    config = root / "sidecar.yaml"
    config.write_text(
        f"backup_dir: {backups}\n"
        f"databases:\n  arrow: {{path: {arrow_db}}}\n  user: {{path: {user_db}}}\n"
        "policies:\n"
        '  daily:  {schedule: "0 3 * * *", keep: 7}\n'
        '  weekly: {schedule: "30 3 * * 0", keep: 4}\n'
        "health: {interval: 60s, quick_check: true}\n"
        f"metrics: {{host: 127.0.0.1, port: {_free_port()}}}\n"
        f"control: {{socket: {root / 'control.sock'}}}\n"
    )
    env = {**os.environ, "SIDECAR_CONFIG": str(config), "SIDECAR_LOG_FORMAT": "json"}
    for var in ("USER_DATABASE_PATH", "ARROW_DATABASE_PATH", "BACKUP_DIR"):
        env.pop(var, None)
    for policy in ("daily", "weekly"):
        subprocess.run(
            [PY, "-m", "backup_sidecar", "backup", "--policy", policy],
            env=env,
            check=True,
            capture_output=True,
        )
    log = (root / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [PY, "-m", "backup_sidecar", "run"],
        env=env,
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
    )
    return proc, root


def measure_idle(
    procs: dict[str, tuple[subprocess.Popen[bytes], int]],
    *,
    seconds: float,
    settle: float,
    checked: dict[str, Path] | None = None,
) -> list[Idle]:
    """Sample the daemons' CPU (all threads, /proc/PID/stat) and RSS over ``seconds``; the
    daemons in ``checked`` (label -> configuration) get a healthcheck every 30 s from the
    start of the window, as Docker runs the HEALTHCHECK, and its CPU is counted apart."""
    checked = checked or {}
    time.sleep(settle)
    cpu0 = {k: pid_cpu_s(p.pid) for k, (p, _) in procs.items()}
    rss_max = dict.fromkeys(procs, 0)
    checks = dict.fromkeys(checked, 0)
    check_cpu = dict.fromkeys(checked, 0.0)
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        for k, (p, _) in procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"daemon {k} exited early ({p.returncode})")
            rss_max[k] = max(rss_max[k], _rss_kib(p.pid))
            if k in checked and time.monotonic() - t0 >= checks[k] * HEALTHCHECK_INTERVAL_S:
                check_cpu[k] += healthcheck(checked[k])
                checks[k] += 1
        time.sleep(min(2.0, seconds / 10))
    elapsed = time.monotonic() - t0
    out = []
    for k, (p, db_bytes) in procs.items():
        cpu = pid_cpu_s(p.pid) - cpu0[k]
        out.append(
            Idle(
                k,
                elapsed,
                cpu0[k],
                cpu,
                cpu / elapsed * 60,
                rss_max[k],
                _rss_kib(p.pid),
                db_bytes,
                checks.get(k, 0),
                check_cpu.get(k, 0.0),
            )
        )
        p.send_signal(signal.SIGTERM)
    for p, _ in procs.values():
        try:
            p.wait(timeout=90)
        except subprocess.TimeoutExpired:
            p.kill()
    return out


def python_version() -> str:
    return sys.version.split()[0]
