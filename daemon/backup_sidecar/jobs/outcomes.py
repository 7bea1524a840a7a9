"""What the jobs report when they finish: outcome events, published to whoever subscribed.

A job publishes one frozen event per outcome (a backup finished ok, failed or was refused as
busy; a prune deleted archives; a restore, scrub or drill finished) to its `Outcomes`. The
daemon subscribes its metrics and its health state (service/subscribers.py); notifications and
the web page subscribe the same way. The CLI publishes to no one. A subscriber that raises is
logged and skipped: it never fails the job nor keeps the event from the others.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from backup_sidecar.errors import SidecarError

log = structlog.get_logger(__name__)


def failure_text(exc: BaseException) -> str:
    """One line for a failed job: the sidecar's own message, or a bug's type and message."""
    return str(exc) if isinstance(exc, SidecarError) else f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class BackupFinished:
    """A backup of ``policy`` finished: ok (``error`` None), failed, or refused as ``busy``
    (another operation held its databases). ``scheduled``: the schedule ran it, not a user."""

    policy: str
    archive: str
    finished_at: datetime
    duration_s: float
    error: str | None = None
    busy: bool = False
    size_bytes: int | None = None
    #: Each database's snapshot lock time (success only).
    snapshot_seconds: Mapping[str, float] = field(default_factory=dict)
    scheduled: bool = False
    #: An incremental backup's per-database pages_read, pages_new, bytes_stored, chain_length.
    pages: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class PruneFinished:
    """A prune of ``policy``: archives deleted, and ones (or the whole prune) that failed."""

    policy: str
    deleted: int
    errors: int


@dataclass(frozen=True)
class RestoreFinished:
    """A restore (never a dry run) of ``archive`` finished: ok, failed, or refused as busy."""

    archive: str
    finished_at: datetime
    error: str | None = None
    busy: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class ScrubFinished:
    """A scrub finished: every archive read (``error`` None), or it failed."""

    finished_at: datetime
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class DrillFinished:
    """A restore drill finished: ok, or ``error`` says what differed or failed."""

    finished_at: datetime
    archive: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class OffsiteVerifyFinished:
    """A scheduled offsite verify ran: ``problems`` is what is wrong now (one line per policy
    whose newest copy failed, or why none could be verified), empty when all passed."""

    problems: tuple[str, ...] = ()


Outcome = (
    BackupFinished
    | PruneFinished
    | RestoreFinished
    | ScrubFinished
    | DrillFinished
    | OffsiteVerifyFinished
)
Subscriber = Callable[[Outcome], None]


class Outcomes:
    """The publisher: hands each event to every subscriber, in the order they subscribed."""

    def __init__(self, *subscribers: Subscriber) -> None:
        self._lock = threading.Lock()
        self._subscribers: tuple[Subscriber, ...] = subscribers

    def subscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subscribers = (*self._subscribers, subscriber)

    def publish(self, event: Outcome) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:  # one broken subscriber must not fail the job or starve the rest
                log.exception(
                    "outcome_subscriber_failed",
                    outcome=type(event).__name__,
                    subscriber=repr(subscriber),
                )
