"""The scheduler against the real APScheduler 3.x triggers and BackgroundScheduler.

Time is driven by time-machine; threads are waited on with threading.Event, never with sleeps.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from apscheduler.triggers.cron import CronTrigger
from hypothesis import given
from hypothesis import strategies as st

from backup_sidecar.service.scheduler import (
    PolicyScheduler,
    Spec,
    needs_catch_up,
    next_fire_times,
    period_around,
    validate_cron,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
WAIT = 10.0  # seconds a test waits for a thread before failing; never a synchronisation sleep

#: 2026's DST changes: (zone, spring-forward day, fall-back day).
DST_DAYS = [
    (BERLIN, date(2026, 3, 29), date(2026, 10, 25)),
    (NEW_YORK, date(2026, 3, 8), date(2026, 11, 1)),
]


def fire_times(spec: Spec, zone: ZoneInfo, first: date, last: date) -> list[datetime]:
    """Every fire time from `first` 00:00 up to (not including) `last` 00:00, local time."""
    start = datetime.combine(first, time(0), tzinfo=zone)
    end = datetime.combine(last, time(0), tzinfo=zone)
    times = next_fire_times(spec, timezone=zone, now=start, count=2000)
    assert times[-1] >= end, "window too long for the count"
    return [t for t in times if t < end]


class Recorder:
    """A run_policy callback that records calls and signals after the n-th one."""

    def __init__(self, *, signal_after: int = 1, block: threading.Event | None = None) -> None:
        self.calls: list[str] = []
        self.done = threading.Event()
        self.signal_after = signal_after
        self.block = block
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def __call__(self, policy: str) -> None:
        with self._lock:
            self.calls.append(policy)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            first = len(self.calls) == 1
        try:
            if first and self.block is not None:
                assert self.block.wait(WAIT)
        finally:
            with self._lock:
                self.active -= 1
                if len(self.calls) >= self.signal_after:
                    self.done.set()


class LogSignal(logging.Handler):
    """Sets `seen` when a record containing `text` is logged (from any thread)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


@pytest.fixture
def max_instances_signal() -> Iterator[LogSignal]:
    """APScheduler's warning that a run was skipped because the previous one is still running."""
    handler = LogSignal("maximum number of running instances reached")
    logger = logging.getLogger("apscheduler")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def never(policy: str) -> datetime | None:
    """A last_success that has never seen a successful run."""
    return None


# --- cron parsing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("0 3 * *", "expected 5 fields, got 4"),
        ("0 3 * * * *", "expected 5 fields, got 6"),
        ("61 3 * * *", "minute '61'"),
        ("0 24 * * *", "hour '24'"),
        ("0 3 32 * *", "day '32'"),
        ("0 3 * 13 *", "month '13'"),
        ("0 3 * * 8", "day-of-week '8'"),
        ("0 3 * * 5-1", "runs backwards"),
        ("0 3 30 2 *", "never fires"),
        ("0 3 1 * 1", "not both"),
        ("0 3 * * funday", "day-of-week 'funday'"),
        ("0 3 * * 1-", "empty value"),
        ("0 3 * * \u0663", "ASCII"),
    ],
)
def test_bad_cron_is_refused_with_the_reason(expr: str, reason: str) -> None:
    """validate_cron names the expression and the field that is wrong."""
    with pytest.raises(ValueError, match=re.escape(f"cron {expr!r}")) as caught:
        validate_cron(expr)
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    "expr",
    ["0 3 * * *", "30 3 * * 0", "*/15 * * * *", "0 0 29 2 *", "0 4 * * mon-fri", "0 1 1 jan *"],
)
def test_good_cron_is_accepted(expr: str) -> None:
    """Ordinary crontab expressions, names and leap days pass."""
    validate_cron(expr)


def test_day_of_week_zero_is_sunday() -> None:
    """The weekly default "30 3 * * 0" runs on Sundays (APScheduler's from_crontab: Mondays)."""
    now = datetime(2026, 11, 25, tzinfo=UTC)  # a Wednesday
    ours = next_fire_times("30 3 * * 0", timezone=UTC, now=now, count=3)
    assert [t.strftime("%a %H:%M") for t in ours] == ["Sun 03:30"] * 3
    raw = CronTrigger.from_crontab("30 3 * * 0", timezone=UTC).get_next_fire_time(None, now)
    assert raw.strftime("%a") == "Mon", "APScheduler fixed from_crontab: revisit the translation"


@given(st.sets(st.integers(min_value=0, max_value=7), min_size=1))
def test_day_of_week_lists_follow_crontab(days: set[int]) -> None:
    """Any list of crontab weekday numbers (0 and 7 Sunday) runs on exactly those weekdays."""
    expr = "0 12 * * " + ",".join(map(str, sorted(days)))
    now = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
    fired = {t.isoweekday() % 7 for t in next_fire_times(expr, timezone=UTC, now=now, count=14)}
    assert fired == {d % 7 for d in days}


@pytest.mark.parametrize(
    ("field", "weekdays"),
    [("1-5", "Mon Tue Wed Thu Fri"), ("5-7", "Fri Sat Sun"), ("*/2", "Sun Tue Thu Sat"),
     ("sat,sun", "Sat Sun"), ("fri-sun", "Fri Sat Sun"), ("1/3", "Mon Thu Sun")],
)  # fmt: skip
def test_day_of_week_ranges_and_steps(field: str, weekdays: str) -> None:
    """Ranges, steps and names in day-of-week mean what they mean to crontab."""
    now = datetime(2026, 1, 4, tzinfo=UTC)  # a Sunday
    times = next_fire_times(f"0 0 * * {field}", timezone=UTC, now=now, count=7)
    seen = {t.strftime("%a") for t in times if t < now + timedelta(days=7)}
    assert seen == set(weekdays.split())


def test_next_fire_times_of_an_interval() -> None:
    """An interval policy runs one interval after `now`, then every interval."""
    now = datetime(2026, 11, 25, 10, tzinfo=UTC)
    times = next_fire_times(timedelta(minutes=5), timezone=UTC, now=now, count=3)
    assert times == [now + timedelta(minutes=5 * k) for k in (1, 2, 3)]


# --- daylight saving time -----------------------------------------------------------------


@pytest.mark.parametrize(("zone", "spring", "autumn"), DST_DAYS)
@pytest.mark.parametrize("expr", ["0 3 * * *", "30 2 * * *", "30 1 * * *", "0 2 * * *"])
def test_daily_jobs_fire_once_per_day_across_dst(
    zone: ZoneInfo, spring: date, autumn: date, expr: str
) -> None:
    """A daily job fires exactly once on every calendar day around both DST changes."""
    for change in (spring, autumn):
        first, last = change - timedelta(days=3), change + timedelta(days=4)
        times = fire_times(expr, zone, first, last)
        per_day = Counter(t.date() for t in times)
        assert per_day == {first + timedelta(days=k): 1 for k in range(7)}, (expr, change)
        assert all(t.utcoffset() == t.astimezone(UTC).astimezone(zone).utcoffset() for t in times)


def test_skipped_time_runs_once_an_hour_later() -> None:
    """On spring-forward day 02:30 does not exist: the 02:30 job runs once, at 03:30 CEST."""
    (fire,) = fire_times("30 2 * * *", BERLIN, date(2026, 3, 29), date(2026, 3, 30))
    assert fire == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert (fire.hour, fire.minute, fire.tzname()) == (3, 30, "CEST")


def test_repeated_time_runs_once_at_the_first_pass() -> None:
    """On fall-back day 02:30 happens twice: the 02:30 job runs only at the first (CEST)."""
    (fire,) = fire_times("30 2 * * *", BERLIN, date(2026, 10, 25), date(2026, 10, 26))
    assert (fire.hour, fire.minute, fire.tzname()) == (2, 30, "CEST")
    (fire,) = fire_times("30 1 * * *", NEW_YORK, date(2026, 11, 1), date(2026, 11, 2))
    assert (fire.hour, fire.minute, fire.tzname()) == (1, 30, "EDT")


def test_plain_apscheduler_doubles_the_repeated_hour() -> None:
    """Why the trigger is wrapped: APScheduler 3's own CronTrigger fires 02:30 twice in autumn."""
    trigger = CronTrigger.from_crontab("30 2 * * *", timezone=BERLIN)
    now = datetime(2026, 10, 25, tzinfo=BERLIN)
    first = trigger.get_next_fire_time(None, now)
    second = trigger.get_next_fire_time(first, first)
    assert (first.date(), second.date()) == (date(2026, 10, 25), date(2026, 10, 25))


@pytest.mark.parametrize(("zone", "spring", "autumn"), DST_DAYS)
def test_wildcard_hours_run_through_dst_at_even_steps(
    zone: ZoneInfo, spring: date, autumn: date
) -> None:
    """A "*/30 * * * *" job runs every 30 real minutes through both changes: none lost, none
    doubled (cron's rule: jobs with a wildcard hour or minute run through the repeated hour)."""
    for change in (spring, autumn):
        times = fire_times("*/30 * * * *", zone, change, change + timedelta(days=1))
        gaps = {b.astimezone(UTC) - a.astimezone(UTC) for a, b in itertools.pairwise(times)}
        assert gaps == {timedelta(minutes=30)}
        hours = 23 if change == spring else 25
        assert len(times) == hours * 2


def test_period_around_dst_days() -> None:
    """The cron period is the real gap between runs: 23 h and 25 h over the change days."""
    spring_night = datetime(2026, 3, 29, 1, 0, tzinfo=BERLIN)
    autumn_night = datetime(2026, 10, 25, 1, 0, tzinfo=BERLIN)
    assert period_around("0 3 * * *", timezone=BERLIN, now=spring_night) == timedelta(hours=23)
    assert period_around("0 3 * * *", timezone=BERLIN, now=autumn_night) == timedelta(hours=25)


# --- catch-up -----------------------------------------------------------------------------

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)  # a Wednesday


@pytest.mark.parametrize(
    ("spec", "last_success", "expected"),
    [
        ("0 3 * * *", None, True),
        ("0 3 * * *", NOW - timedelta(days=2), True),
        ("0 3 * * *", NOW - timedelta(hours=25), True),
        ("0 3 * * *", NOW - timedelta(hours=1), False),
        ("0 3 * * *", NOW - timedelta(hours=23), False),
        ("0 3 * * *", NOW + timedelta(hours=1), False),  # clock went back: not stale
        ("30 3 * * 0", NOW - timedelta(days=6), False),
        ("30 3 * * 0", NOW - timedelta(days=8), True),
        (timedelta(hours=1), NOW - timedelta(minutes=30), False),
        (timedelta(hours=1), NOW - timedelta(hours=2), True),
    ],
)
def test_needs_catch_up(spec: Spec, last_success: datetime | None, expected: bool) -> None:
    """A policy catches up when it never succeeded or not within one period."""
    assert needs_catch_up(spec, timezone=UTC, last_success=last_success, now=NOW) is expected


def test_weekday_schedule_does_not_catch_up_over_the_weekend() -> None:
    """The period is the gap around now: Friday's run covers Saturday, not Monday after 03:00."""
    friday = datetime(2026, 11, 27, 3, 0, 5, tzinfo=UTC)
    saturday = datetime(2026, 11, 28, 10, tzinfo=UTC)
    monday = datetime(2026, 11, 30, 10, tzinfo=UTC)
    spec = "0 3 * * 1-5"
    assert not needs_catch_up(spec, timezone=UTC, last_success=friday, now=saturday)
    assert needs_catch_up(spec, timezone=UTC, last_success=friday, now=monday)


def test_start_runs_stale_policies_once_and_leaves_fresh_ones(
    time_machine: time_machine.TimeMachineFixture,
) -> None:
    """After downtime the daily policy (last success 2 days ago) runs at start; the weekly one
    (succeeded yesterday) waits for its Sunday 03:30."""
    time_machine.move_to(NOW, tick=False)
    last = {"daily": NOW - timedelta(days=2), "weekly": NOW - timedelta(days=1)}
    recorder = Recorder()
    scheduler = PolicyScheduler(
        {"daily": "0 3 * * *", "weekly": "30 3 * * 0"},
        timezone=UTC,
        run_policy=recorder,
        last_success=last.get,
    )
    scheduler.start()
    try:
        assert recorder.done.wait(WAIT)
        assert scheduler.next_run_times()["weekly"] == datetime(2026, 11, 29, 3, 30, tzinfo=UTC)
    finally:
        scheduler.shutdown(wait=True)
    assert recorder.calls == ["daily"]


def test_unreadable_history_means_catch_up(time_machine: time_machine.TimeMachineFixture) -> None:
    """If the last success cannot be read, the policy runs now rather than waiting a period."""
    time_machine.move_to(NOW, tick=False)

    def broken(policy: str) -> datetime | None:
        raise OSError("backup dir gone")

    recorder = Recorder()
    scheduler = PolicyScheduler(
        {"daily": "0 3 * * *"}, timezone=UTC, run_policy=recorder, last_success=broken
    )
    scheduler.start()
    try:
        assert recorder.done.wait(WAIT)
    finally:
        scheduler.shutdown(wait=True)


# --- the running scheduler ----------------------------------------------------------------


def test_interval_policy_runs_repeatedly() -> None:
    """A real BackgroundScheduler runs an `every` policy again and again."""
    recorder = Recorder(signal_after=3)
    scheduler = PolicyScheduler(
        {"often": timedelta(milliseconds=100)},
        timezone=UTC,
        run_policy=recorder,
        last_success=never,
    )
    scheduler.start()
    try:
        assert recorder.done.wait(WAIT)
    finally:
        scheduler.shutdown(wait=True)
    assert set(recorder.calls) == {"often"}
    assert len(recorder.calls) >= 3


def test_slow_run_is_not_overlapped(max_instances_signal: LogSignal) -> None:
    """max_instances=1: while a run is still going, its next due run is skipped, not started
    beside it, even with a free worker thread."""
    release = threading.Event()
    recorder = Recorder(signal_after=2, block=release)
    scheduler = PolicyScheduler(
        {"often": timedelta(milliseconds=50)},
        timezone=UTC,
        run_policy=recorder,
        last_success=never,
        workers=2,
    )
    scheduler.start()
    try:
        assert max_instances_signal.seen.wait(WAIT)
        release.set()
        assert recorder.done.wait(WAIT)
    finally:
        release.set()
        scheduler.shutdown(wait=True)
    assert recorder.max_active == 1


def test_failing_run_does_not_stop_the_schedule() -> None:
    """An exception from run_policy is logged; the policy still runs at its next time."""
    recorder = Recorder(signal_after=2)

    def flaky(policy: str) -> None:
        recorder(policy)
        if len(recorder.calls) == 1:
            raise RuntimeError("disk full")

    scheduler = PolicyScheduler(
        {"often": timedelta(milliseconds=50)}, timezone=UTC, run_policy=flaky, last_success=never
    )
    scheduler.start()
    try:
        assert recorder.done.wait(WAIT)
    finally:
        scheduler.shutdown(wait=True)


def test_long_pause_gives_exactly_one_run(
    time_machine: time_machine.TimeMachineFixture, caplog: pytest.LogCaptureFixture
) -> None:
    """After the clock jumps three days past a daily run (host suspended), the policy runs once,
    not three or four times, and nothing is reported as missed (coalesce + one-period grace)."""
    before = datetime(2026, 11, 25, 2, 59, 59, tzinfo=UTC)
    time_machine.move_to(before, tick=False)
    recorder = Recorder()
    scheduler = PolicyScheduler(
        {"daily": "0 3 * * *"},
        timezone=UTC,
        run_policy=recorder,
        last_success=lambda policy: before - timedelta(hours=1),
    )
    scheduler.start()
    try:
        assert scheduler.next_run_times() == {"daily": datetime(2026, 11, 25, 3, tzinfo=UTC)}
        # The frozen clock keeps the run from coming due until this jump.
        time_machine.move_to(datetime(2026, 11, 28, 3, 0, 5, tzinfo=UTC), tick=False)
        assert recorder.done.wait(WAIT)
    finally:
        scheduler.shutdown(wait=True)
    assert recorder.calls == ["daily"]
    assert not [r for r in caplog.records if "missed" in r.getMessage()]
    assert scheduler.next_run_times() == {"daily": None}  # stopped: nothing is coming


# --- reload -------------------------------------------------------------------------------


def test_reschedule_replaces_jobs_and_keeps_unchanged_ones(
    time_machine: time_machine.TimeMachineFixture,
) -> None:
    """A reload adds, retimes and drops policies; an unchanged policy keeps its next run."""
    time_machine.move_to(NOW, tick=False)
    recorder = Recorder()
    scheduler = PolicyScheduler(
        {"daily": "0 3 * * *", "hourly": timedelta(hours=1), "gone": "0 5 * * *"},
        timezone=UTC,
        run_policy=recorder,
        last_success=lambda policy: NOW,
    )
    scheduler.start()
    try:
        before = scheduler.next_run_times()
        scheduler.reschedule({"daily": "0 3 * * *", "hourly": "15 * * * *", "weekly": "30 3 * * 0"})
        after = scheduler.next_run_times()
    finally:
        scheduler.shutdown(wait=True)
    assert set(after) == {"daily", "hourly", "weekly"}
    assert after["daily"] == before["daily"] == datetime(2026, 11, 26, 3, tzinfo=UTC)
    assert after["hourly"] == datetime(2026, 11, 25, 10, 15, tzinfo=UTC)
    assert after["weekly"] == datetime(2026, 11, 29, 3, 30, tzinfo=UTC)
    assert recorder.calls == []


def test_invalid_reschedule_changes_nothing(time_machine: time_machine.TimeMachineFixture) -> None:
    """A reload with one bad policy is refused whole; the old jobs keep their times."""
    time_machine.move_to(NOW, tick=False)
    scheduler = PolicyScheduler(
        {"daily": "0 3 * * *"}, timezone=UTC, run_policy=Recorder(), last_success=lambda p: NOW
    )
    scheduler.start()
    try:
        before = scheduler.next_run_times()
        with pytest.raises(ValueError, match="policy 'weekly': cron '30 3 \\* \\*'"):
            scheduler.reschedule({"daily": "0 4 * * *", "weekly": "30 3 * *"})
        assert scheduler.next_run_times() == before
    finally:
        scheduler.shutdown(wait=True)


def test_reschedule_leaves_a_running_run_alone(max_instances_signal: LogSignal) -> None:
    """Retiming a policy while it runs neither interrupts that run nor starts another beside it."""
    release = threading.Event()
    recorder = Recorder(block=release)
    scheduler = PolicyScheduler(
        {"often": timedelta(milliseconds=50)},
        timezone=UTC,
        run_policy=recorder,
        last_success=never,
        workers=2,
    )
    scheduler.start()
    try:
        assert max_instances_signal.seen.wait(WAIT)  # the first run is in progress
        scheduler.reschedule({"often": timedelta(hours=1)})
        release.set()
        assert recorder.done.wait(WAIT)
        (next_run,) = scheduler.next_run_times().values()
    finally:
        release.set()
        scheduler.shutdown(wait=True)
    assert recorder.calls == ["often"]
    assert recorder.max_active == 1
    assert next_run is not None
    assert next_run - datetime.now(UTC) > timedelta(minutes=59)


def test_next_run_times_before_start() -> None:
    """Before start (e.g. `config check`), next runs are computed from the schedules."""
    clock: Callable[[], datetime] = lambda: NOW  # noqa: E731
    scheduler = PolicyScheduler(
        {"daily": "0 3 * * *", "often": timedelta(minutes=10)},
        timezone=BERLIN,
        run_policy=Recorder(),
        last_success=never,
        clock=clock,
    )
    assert scheduler.next_run_times() == {
        "daily": datetime(2026, 11, 26, 3, tzinfo=BERLIN),
        "often": NOW + timedelta(minutes=10),
    }


def test_a_clock_step_retimes_cron_policies_from_the_new_wall_time() -> None:
    """A wall-clock step retimes a cron policy like an interval one: stepped forward past its
    next run, it runs now, once (it waited for the old timer); stepped back an hour, its next
    run is the next fire time after the new wall time (it kept the one an hour ahead)."""
    spec = "*/5 * * * *"
    base = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=2, seconds=30)
    now = [base]
    scheduler = PolicyScheduler(
        {"cron": spec},
        timezone=UTC,
        run_policy=lambda name: None,
        last_success=lambda name: now[0],
        clock=lambda: now[0],
    )
    scheduler.start()  # the job's first run is a few minutes from the real time
    try:
        scheduler.clock_stepped()  # two hours ahead of it: due now
        assert scheduler.next_run_times()["cron"] == base
        now[0] = base - timedelta(hours=1)
        scheduler.clock_stepped()
        expected = next_fire_times(spec, timezone=UTC, now=now[0])[0]
        assert scheduler.next_run_times()["cron"] == expected
        now[0] = base - timedelta(minutes=30)
        scheduler.clock_stepped()
        assert scheduler.next_run_times()["cron"] == now[0]
    finally:
        scheduler.shutdown(wait=False)
