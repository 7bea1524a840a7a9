"""The scheduled runs: what the scheduler calls for a policy (a backup and its prune, the
restore drill or the scrub), and what it reports when it drops a run."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from backup_sidecar import archiver, jobs
from backup_sidecar.errors import SidecarError
from backup_sidecar.jobs.headcheck import check_head_if_due
from backup_sidecar.service.archives import ArchivesPublisher, newest_verified
from backup_sidecar.service.claim import BackupDirClaim
from backup_sidecar.service.health import DRILL_POLICY, HealthState
from backup_sidecar.service.live import LiveConfig
from backup_sidecar.service.metrics import Metrics
from backup_sidecar.service.scheduler import SKIP_LATE
from backup_sidecar.settings.model import SCRUB_JOB

log = structlog.get_logger(__name__)

#: A scheduled backup waits this long for a restore or CLI backup holding its databases
#: (skipping would leave a whole period without a backup); then it is counted as failed.
SCHEDULED_WAIT_S = 600.0


class ScheduledRuns:
    """The scheduler's callbacks, over the daemon's parts."""

    def __init__(
        self,
        *,
        live: LiveConfig,
        outcomes: jobs.Outcomes,
        metrics: Metrics,
        health: HealthState,
        archives: ArchivesPublisher,
        claim: BackupDirClaim,
        read_checks: archiver.ReadCheckCache,
        track: Callable[[str], contextlib.AbstractContextManager[None]],
        stopping: threading.Event,
        abort: threading.Event,
    ) -> None:
        self._live = live
        self._outcomes = outcomes
        self._metrics = metrics
        self._health = health
        self._archives = archives
        self._claim = claim
        self._read_checks = read_checks
        self._track = track
        self._stopping = stopping
        self._abort = abort

    def run_policy(self, policy: str) -> None:
        """A scheduled job: back up and prune one policy (or run the restore drill)."""
        if self._stopping.is_set():
            return
        with self._live.publishing:
            rt = self._live.now.runtime
            scheduled = policy in self._live.now.settings.scheduled_policies()
        if not scheduled:  # queued behind a busy worker before a reload removed it
            log.info("scheduled_run_dropped", policy=policy, reason="no longer scheduled")
            return
        with self._track(policy):
            self._claim.ensure()
            lost = self._health.current().claim_lost
            if lost is not None:
                log.error("scheduled_run_refused", policy=policy, reason=lost)
                return
            if policy == DRILL_POLICY:
                self._drill(rt)
                return
            if policy == SCRUB_JOB:
                self._scrub(rt)
                return
            try:
                info = jobs.run_backup(
                    rt,
                    policy=policy,
                    effort=self._effort(rt),
                    outcomes=self._outcomes,
                    scheduled=True,
                    wait=SCHEDULED_WAIT_S,
                    checks=self._read_checks,  # read back: the prune and upload find it done
                )
            except Exception as exc:  # a bug's exception too: /healthz shows the failure
                self._still_configured(policy)  # removed meanwhile: drop what it counted
                if not isinstance(exc, SidecarError):
                    raise  # a bug: the scheduler logs its traceback (scheduled_run_failed)
                return  # logged and published by the job
            jobs.prune_after_backup(
                rt,
                policy=policy,
                just_written=info.name,
                outcomes=self._outcomes,
                checks=self._read_checks,
                catalog=self._archives.catalog,
            )
            self._still_configured(policy)  # removed meanwhile: drop what the prune counted
            self._head_check(rt, policy)
        self._archives.changed()

    def _head_check(self, rt: jobs.Runtime, policy: str) -> None:
        """After an incremental policy's backup: its chain head verified when due."""
        try:
            done = check_head_if_due(
                rt, policy, now=datetime.now(UTC), should_stop=self._abort.is_set
            )
        except (SidecarError, OSError) as exc:
            log.error("chain_head_check_failed", policy=policy, error=str(exc))
            return
        if done is not None and self._still_configured(policy):
            self._metrics.pages.head_checked(policy, ok=done.ok)

    def _effort(self, rt: jobs.Runtime) -> jobs.Effort:
        """A scheduled job's effort: the configured one, stopped when the grace time ends."""
        return dataclasses.replace(rt.effort, should_stop=self._abort.is_set)

    def _still_configured(self, policy: str) -> bool:
        """False for a run that a reload removed the policy of while it ran: what it just
        counted is dropped again rather than left as a series nothing updates."""
        with self._live.publishing:
            if policy in self._live.now.settings.policies:
                return True
            self._metrics.forget(policies=[policy])
            return False

    def run_skipped(self, policy: str, reason: str, scheduled: datetime) -> None:
        """The scheduler dropped a run: counted; one that never ran because no worker was free
        within a period is also a health reason until the policy's next run succeeds. (One
        dropped because the policy's own previous run was still going is not: that run reports
        its own outcome, and a run too slow for its schedule ends up overdue.)"""
        with self._live.publishing:
            if policy not in self._live.now.settings.policies:
                return
            self._metrics.run_missed(policy, reason)
            if reason == SKIP_LATE:
                self._health.run_missed(
                    policy,
                    f"the scheduled run at {scheduled.isoformat()} was skipped: no worker was "
                    "free within one period",
                )

    def _drill(self, rt: jobs.Runtime) -> None:
        try:
            newest = newest_verified(self._archives.catalog.refresh().archives)
        except OSError:
            newest = {}
        if not any(p != archiver.PRE_RESTORE_POLICY for p in newest):
            # Nothing to drill yet: on a fresh directory the drill's catch-up may run before the
            # first backup. Missing backups are the overdue check's business, not a failed drill.
            log.info("restore_drill_skipped", reason=f"no verified archive in {rt.backup_dir}")
            return
        try:
            report = jobs.run_drill(
                rt,
                effort=self._effort(rt),
                outcomes=self._outcomes,
                catalog=self._archives.catalog,
            )
            ok = report.ok
        except SidecarError as exc:  # published by the job
            log.error("restore_drill_failed", error=str(exc))
            ok = False
        if not ok:
            self._archives.changed()  # a failed drill may have marked its archive damaged

    def _scrub(self, rt: jobs.Runtime) -> None:
        """A scheduled scrub; a failed one is a /healthz reason until one succeeds."""
        try:
            jobs.run_scrub(
                rt,
                checks=self._read_checks,
                effort=self._effort(rt),
                outcomes=self._outcomes,
                catalog=self._archives.catalog,
            )
        except Exception as exc:  # logged and published by the job
            if not isinstance(exc, SidecarError):
                raise  # a bug: the scheduler logs its traceback (scheduled_run_failed)
        finally:
            self._archives.changed()  # markers written: damaged counts and /healthz at once
