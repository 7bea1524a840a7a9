"""GFS retention rules with the semantics of ``restic forget``: which restore points each rule
keeps, and why.

Pure: restore points (newest first, by creation sequence) + rules + time zone -> the reasons
each one is kept (none: not kept by any rule). retention.py adds the guarantees around it (the
newest verified archive is never expired, damaged ones never, copies share their original's
fate).

As ``restic forget`` (internal/restic/snapshot_policy.go): counting back from the newest, each
bucket rule (``last``, ``hourly``, ``daily``, ``weekly``, ``monthly``, ``yearly``) keeps the
newest archive of each of its N most recent buckets (local time in ``tz``; weeks are ISO weeks;
-1 is unlimited); while a rule has counts left it also keeps the oldest archive, so a young
policy keeps its history; ``within`` keeps every archive dated after the newest archive's time
minus the duration (relative to the newest archive, not to now); the union of the rules keeps.
Differences, all deliberate: "newest" is the creation sequence, not the time (an archive dated
in the future by a stepped clock is not the newest, and no wall clock is consulted), so a bucket
already given its archive by a newer one is not given a second (restic, ordering by time, never
meets a bucket twice); the hour repeated when the clocks go back is two hourly buckets (restic
merges them); ``within`` is a fixed duration (no calendar months or years); a policy whose
rules are all 0 keeps nothing but its newest verified archive (restic keeps everything).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta, tzinfo

from backup_sidecar.archiver.model import ArchiveInfo

#: A rule count meaning "every bucket" (restic's ``unlimited``).
UNLIMITED = -1


@dataclass(frozen=True)
class KeepRules:
    """One policy's retention. Counts are >= 0 or UNLIMITED; ``within`` None is off. A plain
    ``keep: N`` is ``KeepRules(last=N)``."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: timedelta | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "within" and value < UNLIMITED:
                raise ValueError(f"keep {f.name} must be >= 0 or -1 (unlimited), got {value}")

    def describe(self) -> str:
        """The rules as the configuration names them, e.g. ``keep_last 3, keep_daily 7``."""
        parts = [
            f"keep_{name} {'unlimited' if count == UNLIMITED else count}"
            for name, count in self.counts()
            if count
        ]
        if self.within is not None:
            parts.append(f"keep_within {duration_text(self.within)}")
        return ", ".join(parts) or "newest verified only"

    def counts(self) -> tuple[tuple[str, int], ...]:
        """(rule name, count) of the bucket rules, in restic's order."""
        return tuple((f.name, getattr(self, f.name)) for f in fields(self) if f.name != "within")


def duration_text(value: timedelta) -> str:
    """``7d``, ``36h``, ``90m`` or ``45s``: the largest whole unit, as the configuration reads."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{value.total_seconds():g}s"


def local_time(moment: datetime, tz: tzinfo) -> datetime:
    """``moment`` in ``tz`` (naive: UTC). A hostile archive dated at the edge of what datetime
    holds cannot be moved into the zone: it stays in UTC rather than raising."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    try:
        return aware.astimezone(tz)
    except (OverflowError, ValueError):
        return aware.astimezone(UTC)


def _hour(t: datetime) -> tuple[Hashable, str]:
    offset = t.strftime("%z")
    label = f"{t:%Y-%m-%d %H}:00{offset[:3]}:{offset[3:]}" if offset else f"{t:%Y-%m-%d %H}:00"
    return (t.date(), t.hour, t.utcoffset()), label


def _day(t: datetime) -> tuple[Hashable, str]:
    return t.date(), t.date().isoformat()


def _week(t: datetime) -> tuple[Hashable, str]:
    year, week, _ = t.isocalendar()
    return (year, week), f"{year:04d}-W{week:02d}"


def _month(t: datetime) -> tuple[Hashable, str]:
    return (t.year, t.month), f"{t.year:04d}-{t.month:02d}"


def _year(t: datetime) -> tuple[Hashable, str]:
    return t.year, f"{t.year:04d}"


#: Rule name -> the bucket (key, label) of a local time; ``last`` puts each archive alone.
BUCKETS: dict[str, Callable[[datetime], tuple[Hashable, str]]] = {
    "hourly": _hour,
    "daily": _day,
    "weekly": _week,
    "monthly": _month,
    "yearly": _year,
}


def keep_reasons(
    points: Sequence[ArchiveInfo], rules: KeepRules, *, tz: tzinfo
) -> list[tuple[str, ...]]:
    """For each of ``points`` (newest first), the reasons the rules keep it, such as
    ``last 3``, ``daily 2026-12-06``, ``weekly 2026-W49 (oldest)`` or ``within 7d``; an empty
    tuple when no rule keeps it."""
    reasons: list[list[str]] = [[] for _ in points]
    if not points:
        return []
    local = [local_time(p.created_at, tz) for p in points]
    oldest = len(points) - 1
    for name, count in rules.counts():
        left = count
        seen: set[Hashable] = set()
        for i, moment in enumerate(local):
            if left == 0:
                break
            key: Hashable
            if name == "last":
                key, label = i, str(i + 1)
            else:
                key, label = BUCKETS[name](moment)
            if key in seen and i != oldest:
                continue
            reasons[i].append(f"{name} {label}" + (" (oldest)" if key in seen else ""))
            seen.add(key)
            left -= 1 if left > 0 else 0
    if rules.within is not None:
        since = _since(points[0].created_at, rules.within)
        for i, point in enumerate(points):
            if _aware(point.created_at) > since:
                reasons[i].append(f"within {duration_text(rules.within)}")
    return [tuple(r) for r in reasons]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _since(newest: datetime, within: timedelta) -> datetime:
    """The instant ``within`` before the newest archive's time (the earliest datetime when that
    is before year 1)."""
    try:
        return _aware(newest) - within
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)
