"""When policies run: APScheduler 3.x's scheduler behind a small interface.

The only module running APScheduler's scheduler; what a policy's timing means (crontab with its
DST fixes, intervals, fire times, the gap between runs) is read by `backup_sidecar.cron`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import structlog
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from backup_sidecar.cron import Spec, build_trigger, fire_after, next_fire_times, period_around, utc

log = structlog.get_logger(__name__)

#: Why a scheduled run did not happen: it would have started more than its misfire grace (one
#: period) late, waiting for a worker; or the policy's previous run was still going.
SKIP_LATE = "late"
SKIP_STILL_RUNNING = "still_running"
SKIP_REASONS = (SKIP_LATE, SKIP_STILL_RUNNING)


def needs_catch_up(
    spec: Spec, *, timezone: tzinfo, last_success: datetime | None, now: datetime
) -> bool:
    """Whether a policy must run at start: it never succeeded, or not within one period."""
    if last_success is None:
        return True
    age = utc(now) - utc(last_success)
    return age > period_around(spec, timezone=timezone, now=now)


def misfire_grace(spec: Spec, *, timezone: tzinfo, now: datetime) -> int:
    """Seconds a due run may still start late: one period.

    A run delayed by a busy worker, a suspended host or a clock jump still happens (a late backup
    beats a skipped one); with `coalesce` only the newest due run is kept, so any pause, however
    long, gives exactly one run: never a burst, never a silent skip.
    """
    return max(1, math.ceil(period_around(spec, timezone=timezone, now=now).total_seconds()))


def _utc_now() -> datetime:
    return datetime.now(UTC)


class PolicyScheduler:
    """Runs each scheduled policy through `run_policy(name)` on its own job.

    One job per policy: `max_instances=1` (a slow run is never overlapped by its next one),
    `coalesce=True` and a grace of one period (see `misfire_grace`). At start, a policy whose last
    success is unknown or older than one period runs right away (catch-up after downtime).
    Runs execute on `workers` threads; the default 1 runs policies one after another.
    """

    def __init__(
        self,
        policies: Mapping[str, Spec],
        *,
        timezone: tzinfo,
        run_policy: Callable[[str], None],
        last_success: Callable[[str], datetime | None],
        clock: Callable[[], datetime] = _utc_now,
        workers: int = 1,
        on_skipped: Callable[[str, str, datetime], None] | None = None,
    ) -> None:
        self._specs = dict(policies)
        self._timezone = timezone
        self._run_policy = run_policy
        self._last_success = last_success
        self._clock = clock
        self._lock = threading.Lock()
        self._started = False
        for name, spec in self._specs.items():
            _checked_trigger(name, spec, timezone=timezone)
        # The scheduler's own clock is UTC: comparisons between its "now" and the triggers' zoned
        # fire times then always go through UTC, never through naive wall-clock arithmetic.
        self._scheduler = BackgroundScheduler(
            timezone=UTC, executors={"default": ThreadPoolExecutor(max_workers=workers)}
        )
        self._on_skipped = on_skipped
        self._scheduler.add_listener(self._skipped, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)

    def start(self) -> None:
        """Add every policy's job (catching up where due) and start the scheduler thread."""
        with self._lock:
            now = self._clock()
            for name, spec in self._specs.items():
                self._add_job(name, spec, now=now)
            self._scheduler.start()
            self._started = True
        for name, when in self.next_run_times().items():
            log.info("policy_scheduled", policy=name, next_run=when.isoformat() if when else None)

    def shutdown(self, *, wait: bool) -> None:
        """Stop scheduling; with `wait`, return only after running policies finish."""
        with self._lock:
            if self._scheduler.running:
                self._scheduler.shutdown(wait=wait)

    def reschedule(self, policies: Mapping[str, Spec], *, timezone: tzinfo | None = None) -> None:
        """Switch to new policies (SIGHUP): all or nothing; running runs go on undisturbed.

        Every new spec is checked before anything changes. Unchanged policies keep their next run;
        changed ones are retimed; new ones are added (catching up if due); dropped ones removed.
        A run still in progress keeps counting against `max_instances` of its policy's job id.
        """
        zone = timezone or self._timezone
        new = dict(policies)
        for name, spec in new.items():
            _checked_trigger(name, spec, timezone=zone)
        with self._lock:
            old, self._specs = self._specs, new
            zone_changed, self._timezone = zone != self._timezone, zone
            if not self._started:
                return
            now = self._clock()
            self._scheduler.pause()
            try:
                for name in old.keys() - new.keys():
                    self._scheduler.remove_job(name)
                for name, spec in new.items():
                    if name not in old:
                        self._add_job(name, spec, now=now)
                    elif zone_changed or old[name] != spec:
                        self._retime_job(name, spec, now=now)
            finally:
                self._scheduler.resume()
        log.info(
            "schedule_reloaded",
            added=sorted(new.keys() - old.keys()),
            removed=sorted(old.keys() - new.keys()),
            changed=sorted(n for n in new.keys() & old.keys() if zone_changed or old[n] != new[n]),
        )

    def clock_stepped(self) -> None:
        """Retime every policy from the wall clock as it is now, after it was stepped.

        A job's next run is a wall-clock instant, and the scheduler thread sleeps on a timer
        computed before the step. An interval job is retimed from now (stepped back an hour, it
        would wait that hour). A cron job stepped back waits for its next fire time from now,
        not for the one it had at the old wall time; stepped forward past a due run, it runs
        once at once (coalesced), not when the old timer happens to wake the scheduler.
        """
        with self._lock:
            if not self._started or not self._scheduler.running:
                return
            now = self._clock()
            for name, spec in self._specs.items():
                if isinstance(spec, timedelta):
                    self._retime_job(name, spec, now=now)
                else:
                    self._retime_cron(name, now=now)
            self._scheduler.wakeup()

    def next_run_times(self) -> dict[str, datetime | None]:
        """Policy name -> next run: computed from the specs before start, None after shutdown."""
        if not self._started:
            now = self._clock()
            return {
                name: next(iter(next_fire_times(spec, timezone=self._timezone, now=now)), None)
                for name, spec in self._specs.items()
            }
        if not self._scheduler.running:
            return dict.fromkeys(self._specs)
        return {job.id: job.next_run_time for job in self._scheduler.get_jobs()}

    def _add_job(self, name: str, spec: Spec, *, now: datetime) -> None:
        options: dict[str, Any] = {}
        if self._catch_up_due(name, spec, now=now):
            options["next_run_time"] = now
        self._scheduler.add_job(
            self._run,
            trigger=build_trigger(spec, timezone=self._timezone, start=now),
            args=(name,),
            id=name,
            name=name,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=misfire_grace(spec, timezone=self._timezone, now=now),
            replace_existing=True,
            **options,
        )

    def _retime_job(self, name: str, spec: Spec, *, now: datetime) -> None:
        grace = misfire_grace(spec, timezone=self._timezone, now=now)
        self._scheduler.modify_job(name, misfire_grace_time=grace)
        self._scheduler.reschedule_job(
            name, trigger=build_trigger(spec, timezone=self._timezone, start=now)
        )

    def _retime_cron(self, name: str, *, now: datetime) -> None:
        job = self._scheduler.get_job(name)
        if job is None or job.next_run_time is None:
            return
        if utc(job.next_run_time) <= utc(now):
            when = now  # stepped past a due run: run it once, now
        else:
            when = fire_after(job.trigger, None, now) or job.next_run_time
        if when != job.next_run_time:
            log.info("policy_retimed", policy=name, was=job.next_run_time.isoformat(),
                     next_run=when.isoformat())  # fmt: skip
            self._scheduler.modify_job(name, next_run_time=when)

    def _catch_up_due(self, name: str, spec: Spec, *, now: datetime) -> bool:
        try:
            last = self._last_success(name)
        except Exception:  # unreadable history: back up now rather than wait
            log.warning("last_success_unknown", policy=name, exc_info=True)
            last = None
        due = needs_catch_up(spec, timezone=self._timezone, last_success=last, now=now)
        if due:
            log.info("catch_up_due", policy=name, last_success=last.isoformat() if last else None)
        return due

    def _skipped(self, event: JobEvent) -> None:
        """APScheduler dropped a run (otherwise only a free-text warning of its own)."""
        if event.code == EVENT_JOB_MISSED:
            reason, when = SKIP_LATE, event.scheduled_run_time
        else:
            reason, when = SKIP_STILL_RUNNING, event.scheduled_run_times[-1]
        log.warning("scheduled_run_skipped", policy=event.job_id, reason=reason,
                    scheduled=when.isoformat())  # fmt: skip
        if self._on_skipped is not None:
            try:
                self._on_skipped(event.job_id, reason, when)
            except Exception:  # a listener's failure must not stop the scheduler's loop
                log.exception("scheduled_run_skip_unrecorded", policy=event.job_id)

    def _run(self, name: str) -> None:
        try:
            self._run_policy(name)
        except Exception:  # one failed run must not stop the schedule
            log.exception("scheduled_run_failed", policy=name)


def _checked_trigger(name: str, spec: Spec, *, timezone: tzinfo) -> Any:
    try:
        return build_trigger(spec, timezone=timezone)
    except ValueError as exc:
        raise ValueError(f"policy {name!r}: {exc}") from None
