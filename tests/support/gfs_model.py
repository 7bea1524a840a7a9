"""A small reference model of GFS retention (restic's documented `forget` rules, stated
declaratively) and the hypothesis cases it is checked on: shared by the archives' GFS tests
(tests/archiver/test_gfs.py) and the incremental policies' (tests/incremental/)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from backup_sidecar.archiver import UNLIMITED, KeepRules

ZONES: list[tzinfo] = [
    UTC,
    ZoneInfo("Europe/Berlin"),
    ZoneInfo("America/New_York"),
    ZoneInfo("Australia/Lord_Howe"),  # a 30-minute DST shift
    ZoneInfo("Pacific/Chatham"),  # +12:45 / +13:45
]
#: Instants near which buckets are tricky: DST changes (both ways, both hemispheres), the
#: ends of years whose ISO weeks straddle them, month ends.
EDGES = [
    datetime(2026, 10, 25, 1, 0, tzinfo=UTC),  # Europe falls back
    datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # Europe springs forward
    datetime(2026, 11, 1, 6, 0, tzinfo=UTC),  # New York falls back
    datetime(2026, 4, 4, 15, 0, tzinfo=UTC),  # Lord Howe falls back (30 min)
    datetime(2026, 12, 31, 23, 0, tzinfo=UTC),  # 2026-W53 runs into 2027
    datetime(2027, 1, 3, 23, 0, tzinfo=UTC),  # the end of 2026-W53
    datetime(2026, 2, 28, 23, 30, tzinfo=UTC),
]


def _bucketers(tz: tzinfo) -> dict[str, Callable[[int, datetime], Hashable]]:
    def at(t: datetime) -> datetime:
        return t.astimezone(tz)

    return {
        "last": lambda i, t: i,
        "hourly": lambda i, t: (at(t).strftime("%Y-%m-%d %H"), at(t).utcoffset()),
        "daily": lambda i, t: at(t).strftime("%Y-%m-%d"),
        "weekly": lambda i, t: at(t).strftime("%G-W%V"),
        "monthly": lambda i, t: at(t).strftime("%Y-%m"),
        "yearly": lambda i, t: at(t).strftime("%Y"),
    }


def reference_kept(newest_first: Sequence[datetime], rules: KeepRules, tz: tzinfo) -> set[int]:
    """restic's rules, stated declaratively. A rule with count N keeps the newest archive of
    each of the first N buckets met counting back from the newest (every bucket if unlimited),
    and also the oldest archive when the archives before it span fewer than N buckets (restic
    keeps the oldest while a rule has counts left). keep_within keeps what is dated after the
    newest archive's time minus the duration. The union keeps."""
    kept: set[int] = set()
    if not newest_first:
        return kept
    oldest = len(newest_first) - 1
    counts = {
        "last": rules.last,
        "hourly": rules.hourly,
        "daily": rules.daily,
        "weekly": rules.weekly,
        "monthly": rules.monthly,
        "yearly": rules.yearly,
    }
    for name, bucket in _bucketers(tz).items():
        count = counts[name]
        if count == 0:
            continue
        keys = [bucket(i, t) for i, t in enumerate(newest_first)]
        firsts = [i for i, k in enumerate(keys) if k not in keys[:i]]
        kept.update(firsts if count == UNLIMITED else firsts[:count])
        if count == UNLIMITED or len(set(keys[:oldest])) < count:
            kept.add(oldest)
    if rules.within is not None:
        since = newest_first[0] - rules.within
        kept.update(i for i, t in enumerate(newest_first) if t > since)
    return kept


counts = st.one_of(st.just(0), st.just(0), st.just(UNLIMITED), st.integers(1, 5))


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[datetime], KeepRules, tzinfo]:
    """Archive times in the order they were written (mostly rising; sometimes a clock step
    dates one before or after its neighbours), rules, and a zone."""
    base = draw(st.sampled_from(EDGES))
    n = draw(st.integers(0, 30))
    spacing = draw(st.sampled_from([timedelta(minutes=20), timedelta(hours=1), timedelta(hours=7),
                                    timedelta(days=1), timedelta(days=9)]))  # fmt: skip
    times = []
    t = base - spacing * (n // 2)
    for _ in range(n):
        t += spacing * draw(st.integers(0, 3))
        stepped = draw(
            st.sampled_from([timedelta(0)] * 6 + [timedelta(days=-3), timedelta(days=40)])
        )
        times.append(t + stepped + timedelta(minutes=draw(st.integers(0, 59))))
    within = draw(st.one_of(st.none(), st.integers(1, 24 * 60).map(lambda h: timedelta(hours=h))))
    rules = KeepRules(
        last=draw(counts),
        hourly=draw(counts),
        daily=draw(counts),
        weekly=draw(counts),
        monthly=draw(counts),
        yearly=draw(counts),
        within=within,
    )
    return times, rules, draw(st.sampled_from(ZONES))
