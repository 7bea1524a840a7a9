"""What the jobs report when they finish."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from backup_sidecar.errors import SidecarError


class JobMetrics(Protocol):
    """What the jobs report; the daemon's Metrics implements it, the CLI passes None."""

    def backup_finished(
        self,
        policy: str,
        *,
        ok: bool,
        duration_s: float,
        size_bytes: int | None,
        finished_at: datetime,
        snapshot_seconds: Mapping[str, float] | None = None,
        busy: bool = False,
    ) -> None: ...
    def prune_finished(self, policy: str, *, deleted: int, errors: int) -> None: ...
    def restore_finished(self, *, ok: bool, finished_at: datetime, busy: bool = False) -> None: ...
    def scrub_finished(self, *, ok: bool, finished_at: datetime) -> None: ...


def failure_text(exc: BaseException) -> str:
    """One line for a failed job: the sidecar's own message, or a bug's type and message."""
    return str(exc) if isinstance(exc, SidecarError) else f"{type(exc).__name__}: {exc}"
