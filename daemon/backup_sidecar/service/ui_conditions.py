"""Recent events for the web page from what goes wrong and clears without a job ending: a policy
overdue, a database unhealthy, offsite copies lagging, the offsite verify failing, an offsite
upload pass failing; each once when it begins and once when it clears. The conditions are the
notifications' (service/notify_conditions.py, read off the health `/healthz` reports), plus the
uploader's last pass error; checked after every health update (each upload pass ends with one)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from backup_sidecar.service.health import HealthState
from backup_sidecar.service.notify_conditions import Key, conditions
from backup_sidecar.service.ui_events import RecentEvent, RecentEvents

log = structlog.get_logger(__name__)

#: Notification condition -> the page's event kind (failed backups and drills are the jobs').
_KINDS = {
    "backup_overdue": "overdue",
    "database_unhealthy": "database",
    "offsite_lagging": "offsite lag",
}


class ConditionEvents:
    """A health listener adding an event each time a condition begins or clears."""

    def __init__(
        self,
        *,
        health: HealthState,
        events: RecentEvents,
        upload_error: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._health = health
        self._events = events
        self._upload_error = upload_error
        self._lock = threading.Lock()
        self._known: dict[Key, str] = {}

    def now(self) -> dict[Key, str]:
        status = self._health.current()
        found = {k: v for k, v in conditions(status).items() if k[0] in _KINDS}
        for line in status.offsite_verify_problems:
            found["offsite verify", line] = line
        if (error := self._upload_error()) is not None:
            found["offsite upload", "upload pass"] = error
        return found

    def __call__(self) -> None:
        """Never raises: it runs in whatever thread updated the health."""
        try:
            self._diff()
        except Exception:  # a bug here must not fail the job that updated the health
            log.exception("ui_condition_events_failed")

    def _diff(self) -> None:
        with self._lock:
            now, before = self.now(), self._known
            self._known = now
            at = datetime.now(UTC)
            for key in sorted(before.keys() - now.keys()):
                self._add(at, key, ok=True, detail=f"recovered; it was: {before[key]}")
            for key in sorted(now.keys() - before.keys()):
                self._add(at, key, ok=False, detail=now[key])

    def _add(self, at: datetime, key: Key, *, ok: bool, detail: str) -> None:
        kind = _KINDS.get(key[0], key[0])
        subject = key[1] if key[0] in _KINDS else "-"
        self._events.add(RecentEvent(at, kind, subject, ok, detail))
