"""Reading a policy's timing: crontab expressions and intervals as APScheduler 3.x triggers.

A policy runs by a 5-field crontab expression (read in the configured zone) or by an interval.
Three things APScheduler 3.x gets wrong for crontab users are fixed here, and tested:
- `CronTrigger.from_crontab` reads day-of-week 0 as Monday; crontab means Sunday (0 and 7).
  The field is translated to weekday names, so "30 3 * * 0" runs on Sundays.
- On the autumn DST change the repeated wall-clock hour matched twice: a daily "30 2 * * *"
  ran twice that day. Like cron, a job at a fixed hour now runs once (at the first pass);
  jobs whose minute or hour field starts with `*` run through the repeated hour as usual.
- On the spring DST change a time in the skipped hour ("30 2 * * *" in Europe/Berlin) runs
  once, one hour later by the clock (03:30 CEST, the same instant as 02:30 CET would have been);
  the returned times are normalised so they never carry a wall time that does not exist.
- A cron job restricting both day-of-month and day-of-week is refused: crontab ORs the two
  fields, APScheduler ANDs them, and guessing would run backups on the wrong days.
An `every` interval is elapsed time: `every: 1d` stays 24 real hours apart across DST changes.

A leaf: it imports APScheduler's trigger classes and the standard library only, so the settings
can check an expression without reaching into the running scheduler.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

#: A policy's timing: a crontab expression or an interval.
Spec = str | timedelta

_FIELDS = ("minute", "hour", "day", "month", "day_of_week")
_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
#: How far back to look for a cron's previous fire time; a 5-field cron fires within 28 years.
_LOOKBACK = (timedelta(hours=1), timedelta(days=1), timedelta(days=8), timedelta(days=32),
             timedelta(days=367), timedelta(days=366 * 29))  # fmt: skip


def _day_number(token: str) -> int:
    if token.lower() in _CRON_DAYS:
        return _CRON_DAYS.index(token.lower())
    if not token:
        raise ValueError("day-of-week: empty value in a list or range")
    if not token.isdigit() or int(token) > 7:
        raise ValueError(f"day-of-week {token!r}: use 0-7 (0 and 7 are Sunday) or sun-sat")
    return int(token) % 7


def _translate_day_of_week(field: str) -> str:
    """A crontab day-of-week field (0/7 = Sunday) as APScheduler weekday names."""
    if field == "*":
        return field
    days: set[int] = set()
    for part in field.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise ValueError(f"day-of-week {part!r}: the step must be a positive number")
        if base == "*":
            first, last = 0, 6
        elif "-" in base:
            low, high = base.split("-", 1)
            first, last = _day_number(low), _day_number(high)
            if last == 0 and first > 0:  # "5-7", "fri-sun": Sunday ends the week
                last = 7
            if first > last:
                raise ValueError(f"day-of-week {part!r}: the range runs backwards")
        else:
            first = _day_number(base)
            last = 7 if step else first
        days.update(d % 7 for d in range(first, last + 1, step or 1))
    return ",".join(_CRON_DAYS[d] for d in sorted(days, key=lambda d: (d - 1) % 7))


class _CrontabTrigger(CronTrigger):  # type: ignore[misc]
    """A CronTrigger with crontab's DST rules (see the module docstring)."""

    def __init__(self, expr: str, *, timezone: tzinfo) -> None:
        values = expr.split()
        if not expr.isascii():
            raise ValueError(f"cron {expr!r}: use ASCII digits, letters and * , - /")
        if len(values) != 5:
            raise ValueError(f"cron {expr!r}: expected 5 fields, got {len(values)}")
        fields = dict(zip(_FIELDS, values, strict=True))
        if not fields["day"].startswith("*") and not fields["day_of_week"].startswith("*"):
            raise ValueError(
                f"cron {expr!r}: restrict day-of-month or day-of-week, not both "
                "(crontab runs on either, this scheduler would need both)"
            )
        try:
            fields["day_of_week"] = _translate_day_of_week(fields["day_of_week"])
        except ValueError as exc:
            raise ValueError(f"cron {expr!r}: {exc}") from None
        for name, value in fields.items():
            try:
                CronTrigger(**{name: value}, timezone=UTC)
            except ValueError as exc:
                where = name.replace("_", "-")
                raise ValueError(f"cron {expr!r}: {where} {value!r}: {exc}") from None
        super().__init__(**fields, timezone=timezone)
        self.expr = expr
        self._repeat_in_fold = values[0].startswith("*") or values[1].startswith("*")

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        fire: datetime | None = super().get_next_fire_time(previous_fire_time, now)
        while fire is not None:
            fire = fire.astimezone(UTC).astimezone(self.timezone)  # no nonexistent wall times
            if self._repeat_in_fold or not _is_repeated_wall_time(fire):
                return fire
            fire = super().get_next_fire_time(fire, fire)
        return None


def _is_repeated_wall_time(moment: datetime) -> bool:
    """True for the second pass through a wall-clock time the autumn DST change repeats."""
    return moment.fold == 1 and moment.replace(fold=0).utcoffset() != moment.utcoffset()


def validate_cron(expr: str) -> None:
    """Refuse a crontab expression that is malformed or never fires; the message says why."""
    trigger = _CrontabTrigger(expr, timezone=UTC)
    if trigger.get_next_fire_time(None, datetime(2000, 1, 1, tzinfo=UTC)) is None:
        raise ValueError(f"cron {expr!r}: never fires (no such date)")


def build_trigger(spec: Spec, *, timezone: tzinfo, start: datetime | None = None) -> Any:
    """The APScheduler trigger of a spec; an interval's first run is one interval after `start`."""
    if isinstance(spec, timedelta):
        if spec <= timedelta(0):
            raise ValueError(f"interval {spec} must be positive")
        first = (start + spec) if start is not None else None
        return IntervalTrigger(seconds=spec.total_seconds(), start_date=first, timezone=timezone)
    return _CrontabTrigger(spec, timezone=timezone)


def next_fire_times(
    spec: Spec, *, timezone: tzinfo, now: datetime, count: int = 1
) -> list[datetime]:
    """The next `count` times a policy runs after `now` (for `config check` and status)."""
    trigger = build_trigger(spec, timezone=timezone, start=now)
    times: list[datetime] = []
    fire = trigger.get_next_fire_time(None, now)
    while fire is not None and len(times) < count:
        times.append(fire)
        fire = trigger.get_next_fire_time(fire, fire)
    return times


def fire_after(trigger: Any, previous: datetime | None, now: datetime) -> datetime | None:
    """A trigger's next fire time after `previous` (or from `now`), typed."""
    fire: datetime | None = trigger.get_next_fire_time(previous, now)
    return fire


def utc(moment: datetime) -> datetime:
    """Python compares and subtracts datetimes of one zone by wall clock; UTC is exact."""
    return moment.astimezone(UTC)


def _previous_fire_time(trigger: Any, now: datetime) -> datetime | None:
    """The last fire time at or before `now` (APScheduler 3 only looks forward)."""
    for window in _LOOKBACK:
        fire = fire_after(trigger, None, utc(now) - window)
        if fire is None or utc(fire) > utc(now):
            continue
        while True:
            following = fire_after(trigger, fire, fire)
            if following is None or utc(following) > utc(now):
                return fire
            fire = following
    return None


def period_around(spec: Spec, *, timezone: tzinfo, now: datetime) -> timedelta:
    """How long a policy waits between runs around `now`: the interval, or the cron gap."""
    if isinstance(spec, timedelta):
        return spec
    trigger = _CrontabTrigger(spec, timezone=timezone)
    previous = _previous_fire_time(trigger, now) or fire_after(trigger, None, now)
    following = fire_after(trigger, previous, previous) if previous else None
    if previous is None or following is None:
        raise ValueError(f"cron {spec!r}: never fires")
    return utc(following) - utc(previous)
