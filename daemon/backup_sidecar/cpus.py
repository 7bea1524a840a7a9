"""How a backup's heavy steps use the CPUs this process may use.

A backup's integrity check and its hashing + compression can run at once on two threads. The
sidecar and the application sit in different scheduling groups (containers, or sessions under
Linux autogroup), where the sidecar's niceness does not put its threads behind the
application's: with both CPUs of a two-CPU host busy with the backup, a 200 commits/s writer's
p99 commit latency went from 0.5 ms to 5 ms, and autogroup nice 19 or SCHED_IDLE did not
help. So with fewer than three CPUs the packing is paced: it works in 16 KiB slices (about
0.05 ms of CPU) and sleeps 0.12 ms between them while the check runs, which leaves a CPU idle
most of the time, makes a waking application thread wait one short slice at worst, and still
hides most of the packing behind the check (bench/RESULTS.md has the current figures). Copies
under 256 MiB in total are not paced (archiver/packing.py `PACE_FROM_BYTES`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


class CpuPlan(NamedTuple):
    #: 1: check, then pack; 2: the check on a worker thread while this thread packs.
    threads: int
    #: Pace the packing while the check runs (no CPU is left for the application otherwise).
    pace: bool


def cpu_plan(setting: int | str, *, cpus: float | None = None) -> CpuPlan:
    """The plan for ``cpu_threads`` (``auto``, 1 or 2) on ``cpus`` usable CPUs (default: this
    process's): ``auto`` overlaps from two CPUs on; overlapping paces below three."""
    usable = usable_cpus() if cpus is None else cpus
    threads = (2 if usable >= 2 else 1) if setting == "auto" else int(setting)
    return CpuPlan(threads=threads, pace=threads == 2 and usable < 3)


def usable_cpus(*, cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float:
    """The CPUs in this process's affinity mask, capped by any CPU quota of its cgroups."""
    count = float(len(os.sched_getaffinity(0)))
    return min(count, cgroup_quota(cgroup_root=cgroup_root, proc_cgroup=proc_cgroup))


def cgroup_quota(*, cgroup_root: Path, proc_cgroup: Path) -> float:
    """The tightest CPU quota (in CPUs) on this process's cgroup and its ancestors: cgroup v2
    ``cpu.max`` or v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; inf if none is readable."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return math.inf
    quota = math.inf
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            base, read = cgroup_root, _v2_quota
        elif "cpu" in controllers.split(","):
            base, read = cgroup_root / controllers, _v1_quota
            if not base.is_dir():
                base = cgroup_root / "cpu"
        else:
            continue
        for directory in _self_and_ancestors(base, path):
            quota = min(quota, read(directory))
    return quota


def _self_and_ancestors(base: Path, path: str) -> list[Path]:
    parts = [p for p in path.split("/") if p]
    return [base.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _v2_quota(directory: Path) -> float:
    try:
        limit, period = (directory / "cpu.max").read_text().split()
        return math.inf if limit == "max" else int(limit) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return math.inf


def _v1_quota(directory: Path) -> float:
    try:
        limit = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return math.inf
    return math.inf if limit <= 0 or period <= 0 else limit / period
