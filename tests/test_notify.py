"""The notifier in-process, delivering through apprise to a real local HTTP receiver: state per
(event, subject), conditions other parts raise, events switched off, a reload's removals."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry

from backup_sidecar.jobs.outcomes import BackupFinished, Outcomes
from backup_sidecar.service.dbcheck import DatabaseHealth
from backup_sidecar.service.health import HealthState, HealthStatus
from backup_sidecar.service.live import Configured, LiveConfig
from backup_sidecar.service.notify import Notifier
from backup_sidecar.service.notify_conditions import Message, conditions
from backup_sidecar.service.notify_delivery import QUEUE_SIZE, Delivery
from backup_sidecar.service.overdue import OverduePolicy
from backup_sidecar.settings import load_configuration
from support.receiver import Receiver, running_receiver


def _configured(tmp_path: Path, receiver: Receiver, *, extra: str = "") -> Configured:
    config = tmp_path / f"sidecar-{len(extra)}.yaml"
    config.write_text(
        f"backup_dir: {tmp_path / 'backups'}\n"
        f"databases:\n  user: {{path: {tmp_path / 'user_data.db'}}}\n"
        "policies:\n  daily: {every: 1d, keep: 3}\n  hourly: {every: 1h, keep: 3}\n"
        f"notify:\n  urls: [{json.dumps(receiver.url('json', '/n'))}]\n{extra}"
    )
    settings, paths = load_configuration(config, environ={}, cwd=tmp_path)
    return Configured.of(settings, paths)


def _titles(receiver: Receiver) -> list[str]:
    return [str(r.body["title"]) for r in receiver.received("/n")]


def test_state_per_event_and_subject_and_raised_conditions(tmp_path: Path) -> None:
    """Two policies failing over and over send one message each; a condition raised through
    `condition()` (database maintenance's way in) is announced once and its clearing once;
    only the policy that recovers gets a "recovered" message."""
    with running_receiver() as receiver:
        live = LiveConfig(_configured(tmp_path, receiver))
        health = HealthState()
        notifier = Notifier.start_for(live, health, Outcomes(), CollectorRegistry())
        for run in range(5):
            health.backup_finished("daily", error=f"disk full (run {run})")
            health.backup_finished("hourly", error="database gone")
            notifier.condition("vacuum_refused", "user", "VACUUM would block writers 4 s")
        health.backup_finished("daily")
        notifier.condition("vacuum_refused", "user", None)
        notifier.stop()  # delivers everything queued
        assert _titles(receiver) == [
            "backup-sidecar: policy 'daily': backups fail",
            "backup-sidecar: policy 'hourly': backups fail",
            "backup-sidecar: vacuum_refused: user",
            "backup-sidecar: policy 'daily': backups succeed again",
            "backup-sidecar: vacuum_refused: user recovered",
        ]
        assert "disk full (run 4)" in receiver.received("/n")[3].body["message"]


def test_events_switched_off_and_removed_policies_send_nothing(tmp_path: Path) -> None:
    """A reload that switches `backup_failed` off, or removes the failing policy, drops the
    state silently: no "recovered" message for what nobody asked about any more."""
    with running_receiver() as receiver:
        live = LiveConfig(_configured(tmp_path, receiver))
        health = HealthState()
        notifier = Notifier.start_for(live, health, Outcomes(), CollectorRegistry())
        health.backup_finished("daily", error="disk full")
        health.backup_finished("hourly", error="disk full")
        live.now = _configured(tmp_path, receiver, extra="  events: {backup_failed: false}\n")
        health.backup_finished("hourly")
        health.backup_finished("daily", error="still full")
        notifier.stop()
        assert _titles(receiver) == [
            "backup-sidecar: policy 'daily': backups fail",
            "backup-sidecar: policy 'hourly': backups fail",
        ]


def test_every_healthz_condition_is_a_notification_condition(tmp_path: Path) -> None:
    """Each kind of `/healthz` reason the notifications cover maps to (event, subject) with
    the reason as detail: an overdue policy, a failed drill, a policy whose offsite copies lag
    (its name read off the reason), an unhealthy database; one not yet checked is not one."""
    lag = "policy 'daily': no archive confirmed offsite for 3:00:00, longer than offsite.max_age"
    db = tmp_path / "user.db"
    status = HealthStatus(
        databases=(
            DatabaseHealth("user", db, exists=False, opens=False, check_result=None,
                           healthy=False, error="file does not exist"),
            DatabaseHealth("arrow", db, exists=True, opens=False, check_result=None,
                           healthy=False, error="locked", known=False),
        ),
        overdue=(OverduePolicy("weekly", None, timedelta(days=8)),),
        last_drill_failed=True,
        last_drill_error="row counts differ",
        offsite_lagging=(lag,),
    )  # fmt: skip
    found = conditions(status)
    assert found == {
        ("database_unhealthy", "user"): f"database 'user' ({db}) is unhealthy: file does not exist",
        ("backup_overdue", "weekly"): "policy 'weekly' has no successful backup within 8 days, "
        "0:00:00",
        ("drill_failed", "drill"): "the last restore drill failed: row counts differ",
        ("offsite_lagging", "daily"): lag,
    }


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    """With the delivery thread stuck (here: not started), the 101st message is dropped at
    once and counted `result="dropped"`: the job that raised it never waits."""
    with running_receiver() as receiver:
        live = LiveConfig(_configured(tmp_path, receiver))
        registry = CollectorRegistry()
        delivery = Delivery(live=live, registry=registry)
        started = time.monotonic()
        for i in range(QUEUE_SIZE + 1):
            delivery.send(Message("backup_failed", f"p{i}", failing=True, detail="x"))
        assert time.monotonic() - started < 1.0
        dropped = registry.get_sample_value(
            "backup_sidecar_notifications_total", {"event": "backup_failed", "result": "dropped"}
        )
        assert dropped == 1.0


def test_a_backup_asked_for_by_hand_shares_the_scheduled_condition(tmp_path: Path) -> None:
    """A policy failing both on its schedule (the health state) and when asked for on the
    socket or the page (an unscheduled BackupFinished) is one condition: one "backups fail",
    and one "succeed again" only once both are cleared by a good backup."""
    with running_receiver() as receiver:
        live = LiveConfig(_configured(tmp_path, receiver))
        health, outcomes = HealthState(), Outcomes()
        notifier = Notifier.start_for(live, health, outcomes, CollectorRegistry())
        now = datetime.now(UTC)

        def finished(*, error: str | None, scheduled: bool) -> BackupFinished:
            return BackupFinished("daily", "daily_x", now, 1.0, error=error, scheduled=scheduled)

        outcomes.publish(finished(error="disk full", scheduled=False))
        health.backup_finished("daily", error="disk full")
        outcomes.publish(finished(error="disk full", scheduled=False))
        outcomes.publish(BackupFinished("daily", "-", now, 0.0, error="busy", busy=True))
        health.backup_finished("daily")  # a good scheduled backup: the health state clears
        outcomes.publish(finished(error=None, scheduled=True))  # and so does the notifier
        notifier.stop()
        assert _titles(receiver) == [
            "backup-sidecar: policy 'daily': backups fail",
            "backup-sidecar: policy 'daily': backups succeed again",
        ]
