"""Maintenance jobs on one live database, each under that database's lock in the backup
directory: never during a backup, restore or prune of it (from the daemon or a CLI run), never
two at once. A held lock refuses the job at once (BusyError): maintenance waits for no one.

`checkpoint` truncates a WAL past its bound; `after_backup` runs right after a successful
(verified: the archive's copy passed integrity_check) backup of the database: ``PRAGMA
optimize``, then VACUUM when it is due, inside the window, and its estimated cost fits
``max_writer_wait``; otherwise the step says why not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from backup_sidecar import archiver
from backup_sidecar.archiver import maintain
from backup_sidecar.jobs.runtime import Runtime
from backup_sidecar.settings.maintenance import MaintenanceConfig, in_window

Op = Literal["checkpoint", "optimize", "vacuum"]
#: Why a VACUUM was not run (the `reason` label of the refusals counter).
REFUSALS = ("outside_window", "over_bound", "unmeasured")


@dataclass(frozen=True)
class Step:
    """One maintenance operation's outcome: ``result`` ok, refused (``reason`` says why, and
    nothing was run) or not_due (nothing to do); ``fields`` are what the log line reports."""

    op: Op
    result: Literal["ok", "refused", "not_due"]
    reason: str | None = None
    fields: dict[str, object] = field(default_factory=dict)


def checkpoint(rt: Runtime, database: str, *, bound_s: float) -> Step:
    """``wal_checkpoint(TRUNCATE)`` of ``database``, writers held off at most ``bound_s``."""
    path = rt.databases[database].path
    with archiver.database_locks(rt.backup_dir, [database]):
        done = maintain.checkpoint_truncate(path, busy_timeout_s=bound_s)
    return Step(
        "checkpoint",
        "ok",
        fields={
            "busy": done.busy,
            "wal_bytes_before": done.wal_bytes_before,
            "log_frames": done.log_frames,
            "checkpointed_frames": done.checkpointed_frames,
            "wal_bytes_after": done.wal_bytes_after,
            "duration_s": round(done.duration_s, 3),
        },
    )


def after_backup(
    rt: Runtime,
    database: str,
    *,
    cfg: MaintenanceConfig,
    copy_s: float | None,
    now: datetime,
) -> list[Step]:
    """Optimize, then VACUUM if due and allowed (see the module docstring), under the lock."""
    path, bound = rt.databases[database].path, cfg.max_writer_wait.total_seconds()
    steps: list[Step] = []
    with archiver.database_locks(rt.backup_dir, [database]):
        if cfg.optimize:
            seconds = maintain.optimize(path, busy_timeout_s=bound)
            steps.append(Step("optimize", "ok", fields={"duration_s": round(seconds, 3)}))
        if cfg.vacuum:
            steps.append(_vacuum(path, cfg=cfg, copy_s=copy_s, now=now))
    return steps


def _vacuum(path: Path, *, cfg: MaintenanceConfig, copy_s: float | None, now: datetime) -> Step:
    bound = cfg.max_writer_wait.total_seconds()
    found = maintain.layout(path, busy_timeout_s=bound)
    limit = cfg.max_freelist_ratio or 0.0
    ratio: dict[str, object] = {"freelist_ratio": round(found.freelist_ratio, 4)}
    if found.freelist_ratio <= limit:
        return Step("vacuum", "not_due", fields={**ratio, "max_freelist_ratio": limit})
    window = cfg.window_times
    if window is not None and not in_window(window, now.time()):
        return Step("vacuum", "refused", "outside_window", {**ratio, "window": cfg.window})
    if copy_s is None:
        return Step("vacuum", "refused", "unmeasured", ratio)
    rate = found.page_count * found.page_size / max(copy_s, 0.001)
    estimate = maintain.vacuum_estimate_s(found, copy_bytes_per_s=rate)
    cost: dict[str, object] = {
        **ratio,
        "estimate_s": round(estimate, 3),
        "max_writer_wait_s": bound,
    }
    if estimate > bound:
        return Step("vacuum", "refused", "over_bound", cost)
    done = maintain.vacuum(path, found, busy_timeout_s=bound)
    return Step(
        "vacuum",
        "ok",
        fields={
            **cost,
            "incremental": done.incremental,
            "bytes_before": done.bytes_before,
            "bytes_after": done.bytes_after,
            "duration_s": round(done.duration_s, 3),
        },
    )
