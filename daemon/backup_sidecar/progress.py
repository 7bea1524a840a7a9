"""A progress bar for long operations on a terminal, and nothing anywhere else."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from backup_sidecar.archiver import ProgressFn

#: Stage -> (label, counts bytes?)
_STAGES = {
    "snapshot": ("snapshot", False),
    "pack": ("compress", True),
    "extract": ("read archive", True),
    "check": ("integrity_check", False),
}


def _amount(done: int, total: int, *, in_bytes: bool) -> str:
    if not in_bytes:
        return f"{done}/{total} databases"
    return f"{done / 1e6:,.1f}/{total / 1e6:,.1f} MB"


@contextlib.contextmanager
def progress_bar(*, enabled: bool) -> Iterator[ProgressFn | None]:
    """Yield a progress callback drawing on stderr when ``enabled`` and stderr is a TTY."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    bar = Progress(
        TextColumn("{task.description:<16}"),
        BarColumn(),
        TextColumn("{task.fields[amount]}"),
        TimeRemainingColumn(),
        transient=True,
    )
    tasks: dict[str, TaskID] = {}

    def update(stage: str, done: int, total: int) -> None:
        label, in_bytes = _STAGES.get(stage, (stage, False))
        amount = _amount(done, total, in_bytes=in_bytes)
        if stage not in tasks:
            tasks[stage] = bar.add_task(label, total=total or None, amount=amount)
        bar.update(tasks[stage], completed=done, total=total or None, amount=amount)

    with bar:
        yield update
