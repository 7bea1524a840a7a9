"""Backup work yields the CPU to the application: the jobs lower their thread's priority."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from backup_sidecar.archiver import DatabaseSpec
from backup_sidecar.jobs import Effort, Runtime, run_backup, run_verify


def test_jobs_run_niced_and_leave_other_threads_alone(backup_dir: Path, wal_db: Path) -> None:
    """A backup and a verify run on a thread niced to the configured value (threads they start
    inherit it), while the rest of the process (here the test's own thread) keeps its priority."""
    rt = Runtime(
        backup_dir=backup_dir, databases={"user": DatabaseSpec("user", wal_db)},
        keep={"manual": 3}, effort=Effort(nice=7),
    )  # fmt: skip
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen: dict[str, int] = {}

    def work() -> None:
        info = run_backup(rt, policy="manual")
        run_verify(rt, info.name)
        seen["worker"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(timeout=60)
    assert seen["worker"] == 7
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before
