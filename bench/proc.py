"""Run one command as a whole process and measure it: wall, user+sys CPU, peak RSS
(``wait4`` rusage ``ru_maxrss`` of the command, taken by bench/spawn.py: the largest of the
process and its waited-for children),
and the noise: CPU that other processes on the machine used meanwhile (from /proc/stat,
minus this process tree's own CPU), in cores.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
_SPAWN = Path(__file__).with_name("spawn.py")


@dataclass
class Measurement:
    wall_s: float
    cpu_s: float
    maxrss_kib: int
    returncode: int
    stdout: str
    stderr: str
    noise_cores: float
    loadavg: float
    timed_out: bool = False
    rss_floor_kib: int = 0
    extra: dict[str, float] = field(default_factory=dict)


def busy_jiffies() -> int:
    """Non-idle CPU time of the whole machine since boot, in clock ticks."""
    with Path("/proc/stat").open() as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return user + nice + system + irq + softirq + steal


def pid_cpu_s(pid: int) -> float:
    """CPU seconds of a running process (all its threads), 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    parts = stat.rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12]) + int(parts[13]) + int(parts[14])) / _TICK


def _self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def run(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    also_ours: Sequence[int] = (),
    sync: bool = True,
) -> Measurement:
    """Run ``cmd`` to its end; ``also_ours`` are pids (a writer) whose CPU is not noise.

    ``sync=False`` is for a caller that flushed the disk itself before its own timing began.
    """
    full_env = {**os.environ, **(env or {})}
    if sync:
        os.sync()  # the previous command's dirty pages are flushed on its account, not this one's
    others0 = sum(pid_cpu_s(p) for p in also_ours)
    self0, busy0 = _self_cpu(), busy_jiffies()
    t0 = time.monotonic()
    ru_file = Path(tempfile.mkstemp(prefix="bench-rusage-", suffix=".json")[1])
    proc = subprocess.Popen(
        [sys.executable, "-S", str(_SPAWN), str(ru_file), *cmd],
        env=full_env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill) if timeout else None
    if timer:
        timer.start()
    out_chunks: list[bytes] = []
    err_chunks: list[bytes] = []
    readers = [
        threading.Thread(target=lambda: out_chunks.append(proc.stdout.read())),  # type: ignore[union-attr]
        threading.Thread(target=lambda: err_chunks.append(proc.stderr.read())),  # type: ignore[union-attr]
    ]
    for r in readers:
        r.start()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    if timer:
        timer.cancel()
    for r in readers:
        r.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    busy = (busy_jiffies() - busy0) / _TICK
    ours = ru.ru_utime + ru.ru_stime + (_self_cpu() - self0)
    try:
        inner = json.loads(ru_file.read_text())
    except ValueError:  # killed at the timeout before it could write
        inner = {
            "wall_s": wall,
            "user_s": ru.ru_utime,
            "sys_s": ru.ru_stime,
            "maxrss_kib": ru.ru_maxrss,
            "floor_kib": 0,
        }
    ru_file.unlink()
    ours += sum(pid_cpu_s(p) for p in also_ours) - others0
    return Measurement(
        wall_s=inner["wall_s"],
        cpu_s=inner["user_s"] + inner["sys_s"],
        maxrss_kib=inner["maxrss_kib"],
        rss_floor_kib=inner["floor_kib"],
        returncode=proc.returncode,
        stdout=b"".join(out_chunks).decode(errors="replace"),
        stderr=b"".join(err_chunks).decode(errors="replace"),
        noise_cores=max(0.0, busy - ours) / wall if wall > 0 else 0.0,
        loadavg=os.getloadavg()[0],
        timed_out=timed_out.is_set(),
    )
