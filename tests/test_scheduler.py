"""The scheduler against the real APScheduler 3.x BackgroundScheduler (cron reading: test_cron).

Time is driven by time-machine; threads are waited on with threading.Event, never with sleeps.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine

from backup_sidecar.cron import Spec, next_fire_times
from backup_sidecar.service.scheduler import PolicyScheduler, needs_catch_up

BERLIN = ZoneInfo("Europe/Berlin")
WAIT = 10.0  # seconds a test waits for a thread before failing; never a synchronisation sleep


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
