"""Delivering notifications: a bounded queue and one thread, so no job ever waits on a receiver.

Messages go through `apprise` to every URL of ``notify.urls`` (each send bounded by apprise's
connect and read timeouts, 4 s each unless the URL sets ``cto``/``rto``); heartbeat pings are
a plain GET with a 10 s timeout. A full queue drops the newest item; every send, failure and
drop is counted in ``backup_sidecar_notifications_total{event,result}`` and a failure or drop is
logged. URLs hold secrets: a log line names a URL by its index and scheme only, and the
loggers of apprise and urllib3 (which may print URLs or their paths) are silenced.
"""

from __future__ import annotations

import logging
import queue
import threading
import urllib.request
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter

from backup_sidecar.service.live import LiveConfig
from backup_sidecar.service.metric_families import PREFIX
from backup_sidecar.service.notify_conditions import Message
from backup_sidecar.settings.notify import url_scheme

log = structlog.get_logger(__name__)

QUEUE_SIZE = 100
HEARTBEAT_TIMEOUT_S = 10.0
#: How long a stopping daemon waits for the messages still queued.
DRAIN_S = 10.0


@dataclass(frozen=True)
class Heartbeat:
    """A ping after a backup of ``policy``: ``ok`` pings the URL, a failure ``<url>/fail``."""

    ok: bool
    policy: str


class Delivery:
    """The queue and the thread that empties it."""

    def __init__(self, *, live: LiveConfig, registry: CollectorRegistry) -> None:
        self._live = live
        self._queue: queue.Queue[Message | Heartbeat | None] = queue.Queue(QUEUE_SIZE)
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self.counted = Counter(
            PREFIX + "notifications_total",
            "Notifications and heartbeat pings (event heartbeat) by result: sent, failed "
            "(the receiver refused or was not reached), dropped (the queue was full).",
            ["event", "result"],
            registry=registry,
        )
        self._apprise: Any = None
        self._apprise_urls: tuple[str, ...] = ()

    def start(self) -> None:
        # Their messages may carry the URLs' secrets (apprise's the URLs, urllib3's the paths).
        for name in ("apprise", "urllib3"):
            quiet = logging.getLogger(name)
            quiet.setLevel(logging.CRITICAL + 1)
            quiet.propagate = False
        self._thread.start()

    def stop(self) -> None:
        """Deliver what is queued (up to `DRAIN_S`), then end the thread."""
        try:
            self._queue.put(None, timeout=DRAIN_S)
        except queue.Full:
            return
        self._thread.join(DRAIN_S)

    def send(self, message: Message) -> None:
        if not self._live.now.settings.notify.urls:
            return
        self._enqueue(message, message.event)

    def ping(self, heartbeat: Heartbeat) -> None:
        if self._live.now.settings.notify.heartbeat_url is None:
            return
        self._enqueue(heartbeat, "heartbeat")

    def _enqueue(self, item: Message | Heartbeat, event: str) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.counted.labels(event, "dropped").inc()
            log.warning("notification_dropped", notify_event=event, queued=QUEUE_SIZE)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                if isinstance(item, Heartbeat):
                    self._heartbeat(item)
                else:
                    self._notify(item)
            except Exception:  # a bug in one delivery must not end the thread
                log.exception("notification_crashed")

    def _notify(self, message: Message) -> None:
        urls = tuple(u.get_secret_value().strip() for u in self._live.now.settings.notify.urls)
        for index, server in self._servers(urls):
            if server is None:
                self.counted.labels(message.event, "failed").inc()
                log.error(
                    "notification_failed",
                    notify_event=message.event,
                    subject=message.subject,
                    target=_target(index, urls[index]),
                    error="apprise does not know this URL's scheme or cannot parse it",
                )
                continue
            from apprise import NotifyType  # noqa: PLC0415  (0.2 s: the daemon only)

            kind = NotifyType.FAILURE if message.failing else NotifyType.SUCCESS
            sent = server.notify(body=message.body, title=message.title, notify_type=kind)
            self.counted.labels(message.event, "sent" if sent else "failed").inc()
            if sent:
                log.info(
                    "notification_sent",
                    notify_event=message.event,
                    subject=message.subject,
                    failing=message.failing,
                    target=_target(index, urls[index]),
                )
            else:
                log.warning(
                    "notification_failed",
                    notify_event=message.event,
                    subject=message.subject,
                    target=_target(index, urls[index]),
                    error="the receiver refused it or could not be reached in time",
                )

    def _servers(self, urls: tuple[str, ...]) -> list[tuple[int, Any]]:
        """One apprise plugin per URL (None where apprise refuses it), rebuilt when the URLs
        change (a reload)."""
        if urls != self._apprise_urls or self._apprise is None:
            import apprise  # noqa: PLC0415  (0.2 s: loaded only once a message is due)

            asset = apprise.AppriseAsset(storage_mode=apprise.PersistentStoreMode.MEMORY)
            self._apprise = [apprise.Apprise.instantiate(u, asset=asset) for u in urls]
            self._apprise_urls = urls
        return list(enumerate(self._apprise))

    def _heartbeat(self, beat: Heartbeat) -> None:
        configured = self._live.now.settings.notify.heartbeat_url
        if configured is None:
            return
        base = configured.get_secret_value().strip()
        url = base if beat.ok else base.rstrip("/") + "/fail"
        try:
            with urllib.request.urlopen(url, timeout=HEARTBEAT_TIMEOUT_S) as reply:  # noqa: S310
                reply.read(1024)
        except (OSError, ValueError) as exc:
            self.counted.labels("heartbeat", "failed").inc()
            reason = str(exc).replace(base, "<heartbeat_url>") or type(exc).__name__
            log.warning("heartbeat_failed", ok=beat.ok, policy=beat.policy, error=reason)
            return
        self.counted.labels("heartbeat", "sent").inc()
        log.info("heartbeat_sent", ok=beat.ok, policy=beat.policy)


def _target(index: int, url: str) -> str:
    return f"notify.urls[{index}] ({url_scheme(url)})"
