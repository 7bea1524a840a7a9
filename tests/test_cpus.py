"""How many threads a backup's check and packing get: the usable CPUs, cgroup quotas included."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from backup_sidecar.cpus import CpuPlan, cgroup_quota, cpu_plan, usable_cpus


@pytest.mark.parametrize(
    ("setting", "cpus", "threads", "pace"),
    [("auto", 1.0, 1, False), ("auto", 1.5, 1, False), ("auto", 2.0, 2, True),
     ("auto", 2.5, 2, True), ("auto", 3.0, 2, False), ("auto", 64.0, 2, False),
     (1, 64.0, 1, False), (1, 2.0, 1, False), (2, 1.0, 2, True), (2, 4.0, 2, False)],
)  # fmt: skip
def test_overlap_from_two_cpus_paced_until_one_is_left_for_the_application(
    setting: int | str, cpus: float, threads: int, pace: bool
) -> None:
    assert cpu_plan(setting, cpus=cpus) == CpuPlan(threads=threads, pace=pace)


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_cgroup_v2_takes_the_tightest_quota_of_the_cgroup_and_its_ancestors(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "proc": "0::/app.slice/sidecar\n",
        "fs/cpu.max": "max 100000\n",
        "fs/app.slice/cpu.max": "150000 100000\n",
        "fs/app.slice/sidecar/cpu.max": "max 100000\n",
    })  # fmt: skip
    quota = cgroup_quota(cgroup_root=tmp_path / "fs", proc_cgroup=tmp_path / "proc")
    assert quota == 1.5
    assert usable_cpus(cgroup_root=tmp_path / "fs", proc_cgroup=tmp_path / "proc") == min(
        1.5, len(os.sched_getaffinity(0))
    )


def test_cgroup_v1_cfs_quota(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "proc": "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n",
        "fs/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "250000\n",
        "fs/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
        "fs/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
        "fs/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
    })  # fmt: skip
    assert cgroup_quota(cgroup_root=tmp_path / "fs", proc_cgroup=tmp_path / "proc") == 2.5


@pytest.mark.parametrize(
    "files",
    [
        {},  # no /proc/self/cgroup at all
        {"proc": "0::/\n"},  # nothing readable under the root
        {"proc": "0::/\n", "fs/cpu.max": "max 100000\n"},
        {"proc": "0::/\n", "fs/cpu.max": "garbage\n"},
        {"proc": "0::/\n", "fs/cpu.max": "100000 0\n"},
        {"proc": "3:cpu:/x\n", "fs/cpu/x/cpu.cfs_quota_us": "-1\n",
         "fs/cpu/x/cpu.cfs_period_us": "100000\n"},
    ],
)  # fmt: skip
def test_no_quota_or_an_unreadable_one_means_no_limit(
    tmp_path: Path, files: dict[str, str]
) -> None:
    _tree(tmp_path, files)
    quota = cgroup_quota(cgroup_root=tmp_path / "fs", proc_cgroup=tmp_path / "proc")
    assert quota == math.inf


def test_this_machine_has_a_usable_cpu_count() -> None:
    assert 1 <= usable_cpus() <= os.cpu_count()  # type: ignore[operator]
