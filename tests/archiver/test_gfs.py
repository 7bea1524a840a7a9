"""GFS retention (archiver/gfs.py through retention.select): a property test against a small
reference model written from restic's documented rules (tests/support/gfs_model.py, shared
with the incremental policies' tests), and each rule's edge cases."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import time_machine
from hypothesis import given, settings
from hypothesis import strategies as st

from backup_sidecar.archiver import (
    UNLIMITED,
    ArchiveInfo,
    ArchiveStatus,
    KeepRules,
    select,
)
from support.gfs_model import cases, reference_kept

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def archive(i: int, when: datetime, *, sequence: int | None = None) -> ArchiveInfo:
    return ArchiveInfo(
        name=f"gfs_{i:03d}",
        path=Path(f"/nonexistent/gfs_{i:03d}.tar.gz"),
        size_bytes=1,
        created_at=when,
        status=ArchiveStatus.VERIFIED,
        policy="gfs",
        sequence=i if sequence is None else sequence,
    )


def written(*times: datetime) -> list[ArchiveInfo]:
    """Archives written in this order (creation sequence 1, 2, ...), whatever their dates."""
    return [archive(i + 1, t) for i, t in enumerate(times)]


def kept_reasons(
    archives: Sequence[ArchiveInfo], rules: KeepRules, tz: tzinfo = UTC
) -> dict[str, tuple[str, ...]]:
    """name -> reasons, for every archive ``select`` keeps."""
    chosen = select(archives, rules={"gfs": rules}, tz=tz)
    kept = {a.name: why for a, why in chosen.kept}
    assert not kept.keys() & {a.name for a in chosen.expired}
    assert kept.keys() | {a.name for a in chosen.expired} == {a.name for a in archives}
    return kept


@settings(max_examples=1500, deadline=None)
@given(cases(), st.randoms())
def test_rules_match_the_reference_model(
    case: tuple[list[datetime], KeepRules, tzinfo], rnd: random.Random
) -> None:
    """Whatever the times (DST changes, year ends, clock steps), zone and rules, ``select``
    keeps exactly what the reference model keeps, plus the newest archive when no rule keeps
    it (the newest verified archive is never expired), and expires the rest; the order the
    archives are listed in does not matter, only their creation sequence."""
    times, rules, tz = case
    archives = written(*times)
    shuffled = list(archives)
    rnd.shuffle(shuffled)
    kept = kept_reasons(shuffled, rules, tz)
    newest_first = list(reversed(archives))
    expected = {newest_first[i].name for i in reference_kept(times[::-1], rules, tz)}
    if newest_first:
        expected.add(newest_first[0].name)
    assert set(kept) == expected


# --- each rule's edges -------------------------------------------------------------------------


def test_plain_keep_is_keep_last() -> None:
    """``keep_last N`` keeps the N written last, labelled ``last 1`` .. ``last N``."""
    t = datetime(2026, 12, 1, tzinfo=UTC)
    archives = written(*(t + timedelta(hours=h) for h in range(5)))
    assert kept_reasons(archives, KeepRules(last=2)) == {
        "gfs_005": ("last 1",),
        "gfs_004": ("last 2",),
    }


def test_several_archives_in_one_bucket_keep_the_newest() -> None:
    """Three archives on one day and two on the day before: ``keep_daily 2`` keeps the newest
    of each day and deletes the rest (no count left for the oldest)."""
    d1, d2 = datetime(2026, 12, 5, tzinfo=UTC), datetime(2026, 12, 6, tzinfo=UTC)
    hours = [d1 + timedelta(hours=h) for h in (3, 20)] + [
        d2 + timedelta(hours=h) for h in (1, 9, 23)
    ]
    archives = written(*hours)
    assert kept_reasons(archives, KeepRules(daily=2)) == {
        "gfs_005": ("daily 2026-12-06",),
        "gfs_002": ("daily 2026-12-05",),
    }


def test_a_rule_with_counts_left_keeps_the_oldest() -> None:
    """As restic since 0.16: ``keep_daily 7`` over three days keeps each day's newest and, with
    counts left, the oldest archive too (so a young policy keeps its whole span)."""
    d = datetime(2026, 12, 5, tzinfo=UTC)
    archives = written(d, d + timedelta(hours=5), d + timedelta(days=1), d + timedelta(days=2))
    assert kept_reasons(archives, KeepRules(daily=7)) == {
        "gfs_004": ("daily 2026-12-07",),
        "gfs_003": ("daily 2026-12-06",),
        "gfs_002": ("daily 2026-12-05",),
        "gfs_001": ("daily 2026-12-05 (oldest)",),
    }


def test_autumn_dst_repeated_hour_is_two_hourly_buckets_one_daily() -> None:
    """Berlin, 2026-10-25: 02:30 CEST and 02:30 CET are an hour apart and two hourly buckets
    (restic would merge them: a difference the README states); the day of 25 hours is one daily
    bucket."""
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 +02:00
    second = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 +01:00
    late = datetime(2026, 10, 25, 22, 30, tzinfo=UTC)  # 23:30 +01:00, the same local day
    archives = written(first, second, late)
    assert kept_reasons(archives, KeepRules(hourly=3), BERLIN) == {
        "gfs_003": ("hourly 2026-10-25 23:00+01:00",),
        "gfs_002": ("hourly 2026-10-25 02:00+01:00",),
        "gfs_001": ("hourly 2026-10-25 02:00+02:00",),
    }
    assert kept_reasons(archives, KeepRules(daily=1), BERLIN) == {"gfs_003": ("daily 2026-10-25",)}


def test_spring_dst_day_of_23_hours_is_one_bucket_in_local_time() -> None:
    """New York, 2026-03-08 (23 hours): 00:30 and 23:30 local are one daily bucket although
    05:30 and 03:30 UTC the next day are not one UTC day; in UTC they are two."""
    early = datetime(2026, 3, 8, 5, 30, tzinfo=UTC)  # 00:30 EST
    late = datetime(2026, 3, 9, 3, 30, tzinfo=UTC)  # 23:30 EDT, still March 8 locally
    archives = written(early, late)
    assert kept_reasons(archives, KeepRules(daily=1), NEW_YORK) == {
        "gfs_002": ("daily 2026-03-08",)
    }
    assert kept_reasons(archives, KeepRules(daily=1), UTC) == {"gfs_002": ("daily 2026-03-09",)}


def test_year_boundary_iso_week_and_local_year() -> None:
    """2026-12-31 and 2027-01-02 are both in ISO week 2026-W53 (one weekly bucket) but two
    yearly buckets; and 2027-01-01 02:00 UTC is still 2026 in New York."""
    dec31 = datetime(2026, 12, 31, 12, 0, tzinfo=UTC)
    jan02 = datetime(2027, 1, 2, 12, 0, tzinfo=UTC)
    archives = written(dec31, jan02)
    assert kept_reasons(archives, KeepRules(weekly=1)) == {"gfs_002": ("weekly 2026-W53",)}
    assert kept_reasons(archives, KeepRules(yearly=2)) == {
        "gfs_002": ("yearly 2027",),
        "gfs_001": ("yearly 2026",),
    }
    new_year = written(dec31, datetime(2027, 1, 1, 2, 0, tzinfo=UTC))
    assert kept_reasons(new_year, KeepRules(yearly=1), NEW_YORK) == {"gfs_002": ("yearly 2026",)}
    assert kept_reasons(new_year, KeepRules(yearly=1), UTC) == {"gfs_002": ("yearly 2027",)}


def test_monthly_and_unlimited() -> None:
    """``keep_monthly -1`` (unlimited) keeps the newest archive of every month and the oldest."""
    times = [datetime(2026, m, d, tzinfo=UTC) for m in (1, 2, 3) for d in (1, 15)]
    assert kept_reasons(written(*times), KeepRules(monthly=UNLIMITED)) == {
        "gfs_006": ("monthly 2026-03",),
        "gfs_004": ("monthly 2026-02",),
        "gfs_002": ("monthly 2026-01",),
        "gfs_001": ("monthly 2026-01 (oldest)",),
    }


def test_keep_within_counts_from_the_newest_archive_not_now(
    time_machine: time_machine.TimeMachineFixture,
) -> None:
    """``keep_within 2d`` keeps what is dated after the newest archive's time minus two days,
    however late the prune runs (a policy whose backups stopped keeps its last days); an
    archive exactly two days older is not kept (restic: strictly after)."""
    newest = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
    archives = written(newest - timedelta(days=3), newest - timedelta(days=2),
                       newest - timedelta(days=1, hours=23), newest)  # fmt: skip
    for now in (newest, newest + timedelta(days=400)):
        time_machine.move_to(now, tick=False)
        assert kept_reasons(archives, KeepRules(within=timedelta(days=2))) == {
            "gfs_004": ("within 2d",),
            "gfs_003": ("within 2d",),
        }


def test_archive_from_the_future_does_not_push_out_the_real_newest() -> None:
    """The clock was a year ahead for one backup, then set right: that archive (written
    second) is dated 2027. ``keep_last 1`` keeps the archive written last, not it; with
    ``keep_daily 2`` it takes one bucket of its own, after the real newest; ``keep_within``
    counts from the one written last."""
    real = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
    archives = written(real - timedelta(days=2), real + timedelta(days=365), real)
    assert kept_reasons(archives, KeepRules(last=1)) == {"gfs_003": ("last 1",)}
    assert kept_reasons(archives, KeepRules(daily=2)) == {
        "gfs_003": ("daily 2026-12-06",),
        "gfs_002": ("daily 2027-12-06",),
    }
    assert kept_reasons(archives, KeepRules(within=timedelta(days=3))) == {
        "gfs_003": ("within 3d",),
        "gfs_002": ("within 3d",),
        "gfs_001": ("within 3d",),
    }


def test_union_of_rules_names_every_rule_that_keeps() -> None:
    """Rules combine by union; an archive several rules keep names each of them."""
    d = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
    archives = written(d, d + timedelta(days=1), d + timedelta(days=1, hours=1))
    assert kept_reasons(archives, KeepRules(last=1, daily=2, monthly=2)) == {
        "gfs_003": ("last 1", "daily 2026-12-01", "monthly 2026-12"),
        "gfs_001": ("daily 2026-11-30", "monthly 2026-11"),
    }


def test_no_rule_keeps_only_the_newest_verified() -> None:
    """All counts 0 (``keep: 0``): the newest verified archive stays, named as such; a newer
    legacy archive does not displace it."""
    d = datetime(2026, 12, 1, tzinfo=UTC)
    archives = written(d, d + timedelta(days=1))
    legacy = ArchiveInfo(name="gfs_legacy", path=Path("/nonexistent/gfs_legacy.tar.gz"),
                         size_bytes=1, created_at=d + timedelta(days=2),
                         status=ArchiveStatus.LEGACY, policy="gfs")  # fmt: skip
    assert kept_reasons([*archives, legacy], KeepRules()) == {"gfs_002": ("newest verified",)}


def test_dates_at_the_edge_of_datetime_do_not_raise() -> None:
    """An archive dated year 1 or 9999 (hostile metadata) is bucketed, not a crash, in a zone
    west or east of UTC, with keep_within reaching before year 1."""
    archives = written(datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, tzinfo=UTC))
    for tz in (NEW_YORK, ZoneInfo("Pacific/Kiritimati")):
        kept = kept_reasons(
            archives, KeepRules(hourly=5, yearly=5, within=timedelta(days=3650)), tz
        )
        assert set(kept) == {"gfs_001", "gfs_002"}


@settings(max_examples=500, deadline=None)
@given(cases(), st.lists(st.sampled_from(list(ArchiveStatus)), min_size=30, max_size=30))
def test_rules_keep_the_invariants_with_damaged_and_legacy_archives(
    case: tuple[list[datetime], KeepRules, tzinfo], statuses: list[ArchiveStatus]
) -> None:
    """Whatever the rules, with damaged and legacy archives mixed in: the newest verified
    archive is kept, a damaged one is neither kept nor expired (left alone, not counted), and
    every other archive is either kept with a reason or expired, never both."""
    times, rules, tz = case
    archives = [
        dataclasses.replace(
            a,
            status=status,
            sequence=None if status is not ArchiveStatus.VERIFIED else a.sequence,
        )
        for a, status in zip(written(*times), statuses, strict=False)
    ]
    chosen = select(archives, rules={"gfs": rules}, tz=tz)
    kept = {a.name: why for a, why in chosen.kept}
    expired = [a.name for a in chosen.expired]
    assert len(expired) == len(set(expired))
    assert not kept.keys() & set(expired)
    assert all(why for why in kept.values())
    live = {a.name for a in archives if a.status is not ArchiveStatus.DAMAGED}
    assert kept.keys() | set(expired) == live
    verified = [a for a in archives if a.status is ArchiveStatus.VERIFIED]
    if verified:
        assert max(verified, key=lambda a: a.newness).name in kept
