"""A progress bar for long operations on a terminal, and nothing anywhere else."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from backup_sidecar.archiver import ProgressFn

_LABELS = {
    "snapshot": "snapshot",
    "pack": "compress",
    "extract": "read archive",
    "check": "integrity_check",
}


@contextlib.contextmanager
def progress_bar(*, enabled: bool) -> Iterator[ProgressFn | None]:
    """Yield a progress callback drawing on stderr when ``enabled`` and stderr is a TTY."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    bar = Progress(
        TextColumn("{task.description:<16}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        transient=True,
    )
    tasks: dict[str, TaskID] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(_LABELS.get(stage, stage), total=total or None)
        bar.update(tasks[stage], completed=done, total=total or None)

    with bar:
        yield update
