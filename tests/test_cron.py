"""Crontab expressions and intervals read by backup_sidecar.cron, against the real APScheduler 3.x
triggers: crontab's day-of-week, refused expressions, and the DST rules.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from hypothesis import given
from hypothesis import strategies as st

from backup_sidecar.cron import Spec, next_fire_times, period_around, validate_cron

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")

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
