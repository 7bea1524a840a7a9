"""Notifications: one message when a condition begins and one when it ends, plus heartbeats.

The `Notifier` listens to the `HealthState` (after every update it diffs the conditions of
service/notify_conditions.py against the ones it already announced) and subscribes to the
jobs' outcomes (a heartbeat ping after each backup: the URL on success, ``<url>/fail`` on a
failure). State is kept per (event, subject), so a policy failing every hour sends one
"failing" and one "recovered" message, not one per run. It lives in memory: a restart
announces what is still wrong once more. A reload drops the state of removed policies and
databases and of events switched off, without a message; with no URL configured, nothing is
kept (URLs added later announce what is wrong then).

Other parts of the daemon raise their own conditions with `condition()` (e.g. database
maintenance): the same de-duplication, the same delivery.

Everything is handed to `Delivery` (service/notify_delivery.py): a bounded queue and one
thread, so a slow or dead receiver never blocks a backup.
"""

from __future__ import annotations

import threading

import structlog
from prometheus_client import CollectorRegistry

from backup_sidecar.jobs.outcomes import BackupFinished, Outcome, Outcomes
from backup_sidecar.service.health import HealthState
from backup_sidecar.service.live import LiveConfig
from backup_sidecar.service.notify_conditions import Key, Message, conditions, still_watched
from backup_sidecar.service.notify_delivery import Delivery, Heartbeat

log = structlog.get_logger(__name__)


class Notifier:
    """Turns condition changes and backup outcomes into messages for `Delivery`."""

    def __init__(self, *, live: LiveConfig, health: HealthState, delivery: Delivery) -> None:
        self._live = live
        self._health = health
        self._delivery = delivery
        self._lock = threading.Lock()
        #: (event, subject) -> detail of every condition announced as failing.
        self._announced: dict[Key, str] = {}
        #: Conditions other parts raised through `condition()`.
        self._raised: dict[Key, str] = {}

    @classmethod
    def start_for(
        cls,
        live: LiveConfig,
        health: HealthState,
        outcomes: Outcomes,
        registry: CollectorRegistry,
    ) -> Notifier:
        """The daemon's notifier, listening and subscribed, its delivery thread started."""
        delivery = Delivery(live=live, registry=registry)
        delivery.start()
        notifier = cls(live=live, health=health, delivery=delivery)
        health.listen(notifier.health_changed)
        outcomes.subscribe(notifier)
        notifier.health_changed()  # what is wrong at start (usually nothing known yet)
        return notifier

    def stop(self) -> None:
        self._delivery.stop()

    def condition(self, event: str, subject: str, problem: str | None) -> None:
        """Raise (``problem``: what is wrong) or clear (None) a condition of ``event`` about
        ``subject``: announced once when raised, once when cleared."""
        with self._lock:
            if problem is None:
                self._raised.pop((event, subject), None)
            else:
                self._raised[event, subject] = problem
        self.health_changed()

    def health_changed(self) -> None:
        """Announce the conditions that began or ended since the last call. Never raises: it
        runs in whatever thread updated the health."""
        try:
            self._diff()
        except Exception:  # a bug here must not fail the job that updated the health
            log.exception("notification_diff_failed")

    def _diff(self) -> None:
        settings = self._live.now.settings
        cfg = settings.notify
        with self._lock:
            if not cfg.urls:
                self._announced.clear()
                return
            raised = {k: v for k, v in self._raised.items() if still_watched(k, settings)}
            now = {**conditions(self._health.current()), **raised}
            now = {k: v for k, v in now.items() if cfg.events.enabled(k[0])}
            messages = []
            for key, detail in sorted(now.items()):
                if key not in self._announced:
                    messages.append(Message(*key, failing=True, detail=detail))
            for key, detail in sorted(self._announced.items()):
                if key in now:
                    continue
                if cfg.events.enabled(key[0]) and still_watched(key, settings):
                    messages.append(Message(*key, failing=False, detail=detail))
                else:
                    log.info("notification_state_dropped", notify_event=key[0], subject=key[1])
            self._announced = now
            for message in messages:  # queued under the lock: never out of order
                self._delivery.send(message)

    def __call__(self, event: Outcome) -> None:
        """An outcome subscriber: a heartbeat ping after each backup (not a busy refusal). A
        backup asked for on the socket or the page that fails raises the policy's
        `backup_failed` condition as a scheduled one does through the health state (the same
        key: one message for both); the policy's next good backup, however run, clears it."""
        if isinstance(event, BackupFinished) and not event.busy:
            self._delivery.ping(Heartbeat(ok=event.ok, policy=event.policy))
            if event.ok:
                self.condition("backup_failed", event.policy, None)
            elif not event.scheduled:
                detail = f"policy {event.policy!r}: the last backup failed: {event.error}"
                self.condition("backup_failed", event.policy, detail)
