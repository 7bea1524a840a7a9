"""The daemon's health subscriber against a reload: an alarm of a policy the reload removed
never comes back, however the two interleave."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path

from backup_sidecar.jobs.outcomes import BackupFinished
from backup_sidecar.service.health import HealthState, HealthStatus
from backup_sidecar.service.live import Configured, LiveConfig
from backup_sidecar.service.subscribers import HealthSubscriber
from backup_sidecar.settings import load_configuration

FINISHED_AT = "2026-12-07T12:00:00+00:00"


def _configured(tmp_path: Path, policies: str) -> Configured:
    config = tmp_path / f"sidecar-{len(policies)}.yaml"
    config.write_text(
        f"backup_dir: {tmp_path / 'backups'}\n"
        f"databases:\n  user: {{path: {tmp_path / 'user_data.db'}}}\n"
        f"policies:\n{policies}"
    )
    settings, paths = load_configuration(config, environ={}, cwd=tmp_path)
    return Configured.of(settings, paths)


class _SlowHealth(HealthState):
    """A health state whose recording of a failed backup waits until released, so a reload
    can be started at exactly that moment."""

    def __init__(self) -> None:
        super().__init__()
        self.recording = threading.Event()
        self.release = threading.Event()

    def backup_finished(self, policy: str, *, error: str | None = None) -> HealthStatus:
        self.recording.set()
        assert self.release.wait(timeout=30), "the test never released the recording"
        return super().backup_finished(policy, error=error)


def test_a_reload_cannot_slip_between_the_check_and_the_record(tmp_path: Path) -> None:
    """A failed scheduled backup of `slow` is being recorded while a SIGHUP removes `slow`:
    the reload (swap the configuration, forget the policy, under the publishing lock) waits
    for the record, so the failure it forgets is gone afterwards. Checking "still configured"
    and recording as two steps left `/healthz` failing for the removed policy until a
    restart."""
    live = LiveConfig(
        now=_configured(tmp_path, "  slow: {every: 1h, keep: 3}\n  fast: {every: 1h, keep: 3}\n")
    )
    health = _SlowHealth()
    subscriber = HealthSubscriber(health, publish_if_configured=live.publish_if_configured)
    event = BackupFinished(
        policy="slow",
        archive="slow_20261207_120000",
        scheduled=True,
        error="database 'extra' is gone",
        duration_s=0.1,
        finished_at=datetime.fromisoformat(FINISHED_AT),
    )
    job = threading.Thread(target=subscriber, args=(event,))
    job.start()
    assert health.recording.wait(timeout=30)
    reduced = _configured(tmp_path, "  fast: {every: 1h, keep: 3}\n")

    def reload() -> None:  # what Service.reload does under the lock
        live.now = reduced
        health.forget(policies={"slow"}, databases=set())

    if live.publishing.acquire(blocking=False):  # the recorder does not hold it: reload now
        try:
            reload()
        finally:
            live.publishing.release()
        health.release.set()
    else:  # it does: the reload waits for the record, then forgets it
        health.release.set()
        with live.publishing:
            reload()
    job.join(timeout=30)
    assert not job.is_alive()
    assert health.current().failed_backups == ()
