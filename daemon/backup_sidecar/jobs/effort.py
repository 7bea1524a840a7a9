"""How hard a job works: one frozen value the command layer builds and the jobs unpack.

The compression level, the threads and pacing of a backup's check and compression, the thread's
niceness, how long SQLite may wait for the application's lock, where progress goes and when to
stop. The daemon and the CLI take it from the settings (`Runtime.effort`) and add their
per-call callbacks with `dataclasses.replace`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict

from backup_sidecar import archiver
from backup_sidecar.archiver import ProgressFn


def never() -> bool:
    """The `should_stop` of a job nothing stops."""
    return False


class ArchiverEffort(TypedDict):
    """The archiver's keywords (create_backup, restore_archive) an Effort fills in."""

    level: int
    threads: int
    pace: bool
    lock_timeout: float
    progress: ProgressFn | None
    should_stop: Callable[[], bool]


@dataclass(frozen=True)
class Effort:
    """How hard one job works (see the module docstring)."""

    level: int = archiver.DEFAULT_LEVEL
    #: Threads for a backup's integrity check and compression (1: one after the other), and
    #: whether the compression yields its CPU while the check runs (backup_sidecar.cpus).
    threads: int = 1
    pace: bool = False
    nice: int = 0
    lock_timeout: float = 30.0
    progress: ProgressFn | None = None
    should_stop: Callable[[], bool] = never

    def archiver_keywords(self) -> ArchiverEffort:
        """The keywords the archiver's backup and restore take."""
        return ArchiverEffort(
            level=self.level,
            threads=self.threads,
            pace=self.pace,
            lock_timeout=self.lock_timeout,
            progress=self.progress,
            should_stop=self.should_stop,
        )

    def lower_priority(self) -> None:
        """Make the calling thread (and the threads it starts, which inherit it) yield the CPU
        to the application: with both cores busy checking and compressing, an unniced backup
        raised a 200 commits/s writer's p99 commit latency about threefold. Linux niceness is
        per thread; it is only ever raised here, so a daemon's worker threads stay niced."""
        tid = threading.get_native_id()
        if self.nice > os.getpriority(os.PRIO_PROCESS, tid):
            os.setpriority(os.PRIO_PROCESS, tid, self.nice)
