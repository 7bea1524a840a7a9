"""Recent events for the web page: the last backups, restores, scrubs, drills and prunes, as the
jobs publish them (Outcomes, the same stream the metrics, health and notifications
subscribe to), newest first, kept in memory while the daemon runs."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

from backup_sidecar.jobs.outcomes import (
    BackupFinished,
    DrillFinished,
    Outcome,
    PruneFinished,
    RestoreFinished,
    ScrubFinished,
)

#: How many events the page shows.
KEEP = 50


@dataclass(frozen=True)
class RecentEvent:
    at: datetime
    kind: str
    subject: str
    ok: bool
    detail: str


def describe(event: Outcome) -> RecentEvent | None:
    """One line of the page's event list (None: an event the page does not show)."""
    now = datetime.now(UTC)
    match event:
        case BackupFinished():
            how = "scheduled" if event.scheduled else "asked for"
            if event.pages:  # an incremental backup: what each database's stored
                how += "; incremental: " + ", ".join(
                    f"{db} {p.get('pages_new', 0)} new pages of {p.get('pages_read', 0)}"
                    for db, p in sorted(event.pages.items())
                )
            what = "busy: " + (event.error or "") if event.busy else (event.error or how)
            return RecentEvent(now, "backup", f"{event.policy}: {event.archive}", event.ok, what)
        case RestoreFinished():
            return RecentEvent(now, "restore", event.archive, event.ok, event.error or "")
        case ScrubFinished():
            return RecentEvent(now, "scrub", "every archive", event.ok, event.error or "")
        case DrillFinished():
            return RecentEvent(now, "drill", event.archive or "-", event.ok, event.error or "")
        case PruneFinished():
            detail = f"{event.deleted} deleted, {event.errors} failed"
            return RecentEvent(now, "prune", event.policy, not event.errors, detail)
    return None


class RecentEvents:
    """An outcome subscriber keeping the last KEEP events the page shows."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: deque[RecentEvent] = deque(maxlen=KEEP)

    def __call__(self, event: Outcome) -> None:
        line = describe(event)
        if line is not None:
            self.add(line)

    def add(self, line: RecentEvent) -> None:
        with self._lock:
            self._events.appendleft(line)

    def newest_first(self) -> list[RecentEvent]:
        with self._lock:
            return list(self._events)
