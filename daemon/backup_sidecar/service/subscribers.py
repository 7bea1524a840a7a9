"""The daemon's subscribers to the jobs' outcome events: the metrics and the health state.

Each maps an event onto what it publishes; neither knows which entry point ran the job.
Notifications and the web page subscribe the same way (`Outcomes.subscribe`).
"""

from __future__ import annotations

from collections.abc import Callable

from backup_sidecar.jobs.outcomes import (
    BackupFinished,
    DrillFinished,
    OffsiteVerifyFinished,
    Outcome,
    PruneFinished,
    RestoreFinished,
    ScrubFinished,
)
from backup_sidecar.service.health import HealthState
from backup_sidecar.service.metrics import Metrics


class MetricsSubscriber:
    """Counts every outcome in the Prometheus metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def __call__(self, event: Outcome) -> None:
        m = self._metrics
        match event:
            case BackupFinished():
                m.backup_finished(
                    event.policy,
                    ok=event.ok,
                    duration_s=event.duration_s,
                    size_bytes=event.size_bytes,
                    finished_at=event.finished_at,
                    snapshot_seconds=event.snapshot_seconds,
                    busy=event.busy,
                )
                if event.ok and event.pages:
                    m.pages.backup_stored(event.policy, event.pages)
            case PruneFinished():
                m.prune_finished(event.policy, deleted=event.deleted, errors=event.errors)
            case RestoreFinished():
                m.restore_finished(ok=event.ok, finished_at=event.finished_at, busy=event.busy)
            case ScrubFinished():
                m.scrub_finished(ok=event.ok, finished_at=event.finished_at)
            case DrillFinished():
                m.drill_finished(ok=event.ok, finished_at=event.finished_at)


class HealthSubscriber:
    """Keeps `/healthz`'s reasons: a failed scheduled backup of a policy still configured
    (a reload may have removed it while it ran: ``publish_if_configured`` checks and records
    under the reload's lock) until one of that policy succeeds (a backup asked for on the
    socket clears it too), a failed scrub until one succeeds, the drill's last result, and what
    the last scheduled offsite verify found wrong."""

    def __init__(
        self,
        health: HealthState,
        *,
        publish_if_configured: Callable[[str, Callable[[], object]], bool],
    ) -> None:
        self._health = health
        self._publish_if_configured = publish_if_configured

    def __call__(self, event: Outcome) -> None:
        h = self._health
        match event:
            case BackupFinished() if event.ok:
                h.backup_finished(event.policy)
            case BackupFinished() if event.scheduled:
                policy, error = event.policy, event.error
                self._publish_if_configured(policy, lambda: h.backup_finished(policy, error=error))
            case ScrubFinished():
                h.scrub_finished(error=event.error)
            case DrillFinished():
                h.drill_finished(ok=event.ok, error=event.error)
            case OffsiteVerifyFinished():
                h.offsite_verify_finished(event.problems)
