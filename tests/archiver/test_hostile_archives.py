"""Hostile files in the backup directory (issue 12, item 5): each is that archive's fault alone.

Each case below once raised an uncaught exception (RecursionError, ValueError, OverflowError)
out of the archive reader, so one such file stopped `list` for the whole directory, the
daemon's start and its prunes. Each must now be listed ``damaged`` with a one-line reason,
refused by ``read_manifest``, ``verify`` and ``restore`` with CorruptArchiveError naming the
fault, and leave every other archive listed and prunable. The builders (tests/support/archives.py)
are shared with the fuzzer (test_fuzz_archives.py) and the daemon-level test
(tests/daemon/test_daemon_hostile_dir.py).
"""

from __future__ import annotations

import gzip
import re
import time
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest

from backup_sidecar import jobs
from backup_sidecar.archiver import (
    ArchiveStatus,
    list_archives,
    read_check,
    read_manifest,
    restore_archive,
    select_expired,
    staging_area,
    verify_archive,
)
from backup_sidecar.archiver.gzipstream import MAX_EMPTY_MEMBERS, MAX_MEMBERS
from backup_sidecar.errors import CorruptArchiveError
from backup_sidecar.service.overdue import overdue_policies, policy_overdue
from backup_sidecar.service.scheduler import needs_catch_up
from support.archives import (
    ARCHIVE,
    EMPTY_MEMBERS,
    HOSTILE,
    NOW,
    GoodArchive,
    created_at,
    empty_members,
    one_byte_members,
    repack,
    with_metadata,
)


def _restore(path: Path, good: GoodArchive, backup_dir: Path, **options: Any) -> None:
    """``restore_archive`` of ``path`` over the good archive's source databases."""
    restore_archive(
        path,
        databases=good.specs(),
        selected=None,
        backup_dir=backup_dir,
        now=NOW,
        **options,
    )


@pytest.fixture(params=sorted(HOSTILE))
def hostile_case(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def hostile_dir(root: Path, good: GoodArchive, data: bytes) -> Path:
    """A backup directory holding the good archive (``daily_20260101_000000``, verified), the
    hostile file (``daily_20250101_000000``) and an older good one (``daily_20240101_000000``)."""
    backup_dir = root / "backups"
    backup_dir.mkdir(parents=True)
    (backup_dir / f"{ARCHIVE}.tar.gz").write_bytes(good.data)
    (backup_dir / "daily_20250101_000000.tar.gz").write_bytes(data)
    older = with_metadata(good, created_at="2024-01-01T00:00:00+00:00")
    (backup_dir / "daily_20240101_000000.tar.gz").write_bytes(repack(good, metadata=older))
    return backup_dir


# --- each case: listed damaged, refused by every reader, the others still listed -------------


def test_hostile_file_is_listed_damaged_and_the_others_still_listed(
    hostile_case: str, good: GoodArchive, tmp_path: Path
) -> None:
    """`list` of a directory holding the hostile file shows it damaged with a one-line reason
    naming the fault, and both good archives verified, in order; retention over that listing
    expires the older good one and never the damaged one."""
    build, fault = HOSTILE[hostile_case]
    backup_dir = hostile_dir(tmp_path, good, build(good))
    archives = list_archives(backup_dir)
    by_name = {a.name: a for a in archives}
    bad = by_name["daily_20250101_000000"]
    assert bad.status is ArchiveStatus.DAMAGED
    assert bad.error is not None and re.search(fault, bad.error), bad.error
    assert "\n" not in bad.error and len(bad.error) < 300, bad.error
    assert by_name[ARCHIVE].status is ArchiveStatus.VERIFIED
    assert by_name["daily_20240101_000000"].status is ArchiveStatus.VERIFIED
    good_order = [a.name for a in archives if a.status is ArchiveStatus.VERIFIED]
    assert good_order == [ARCHIVE, "daily_20240101_000000"]
    expired = select_expired(archives, keep={"daily": 1})
    assert [a.name for a in expired] == ["daily_20240101_000000"]
    assert all(jobs.archive_json(a)["status"] for a in archives)


def test_hostile_file_is_refused_by_every_reader(
    hostile_case: str, good: GoodArchive, tmp_path: Path
) -> None:
    """read_manifest, verify_archive and restore_archive each raise the archive's own
    CorruptArchiveError naming the fault; the live databases are untouched."""
    build, fault = HOSTILE[hostile_case]
    backup_dir = hostile_dir(tmp_path, good, build(good))
    path = backup_dir / "daily_20250101_000000.tar.gz"
    with pytest.raises(CorruptArchiveError, match="daily_20250101_000000") as err:
        read_manifest(path)
    assert re.search(fault, str(err.value)), str(err.value)
    with (
        pytest.raises(CorruptArchiveError) as err,
        staging_area(backup_dir, purpose="verify") as area,
    ):
        verify_archive(path, staging=area)
    assert re.search(fault, str(err.value)), str(err.value)
    live = {name: src.read_bytes() for name, src in good.sources.items()}
    with pytest.raises(CorruptArchiveError) as err:
        _restore(path, good, backup_dir)
    assert re.search(fault, str(err.value)), str(err.value)
    assert {name: src.read_bytes() for name, src in good.sources.items()} == live


def test_3000_empty_gzip_members_are_refused_by_verify(good: GoodArchive, tmp_path: Path) -> None:
    """3,000 empty gzip members between the metadata and the database member (each chained
    member recursed once: RecursionError): the metadata still lists, verify and restore refuse
    it as corrupt."""
    backup_dir = hostile_dir(tmp_path, good, empty_members(EMPTY_MEMBERS)(good))
    path = backup_dir / "daily_20250101_000000.tar.gz"
    assert read_manifest(path).backup_name == ARCHIVE
    with (
        pytest.raises(CorruptArchiveError, match=f"more than {MAX_EMPTY_MEMBERS} empty gzip"),
        staging_area(backup_dir, purpose="verify") as area,
    ):
        verify_archive(path, staging=area)
    with pytest.raises(CorruptArchiveError, match="empty gzip members"):
        _restore(path, good, backup_dir, dry_run=True)


def test_a_few_empty_gzip_members_still_verify(good: GoodArchive, backup_dir: Path) -> None:
    """Empty gzip members are valid gzip: up to the bound (as `cat a.gz empty.gz` makes), the
    archive still verifies with its exact content."""
    path = backup_dir / "few.tar.gz"
    path.write_bytes(empty_members(MAX_EMPTY_MEMBERS)(good))
    with staging_area(backup_dir, purpose="verify") as area:
        verified = verify_archive(path, staging=area)
        assert {p.name: p.read_bytes() for p in verified.staged.values()} == good.members


def test_thousands_of_gzip_members_are_refused_early(good: GoodArchive, tmp_path: Path) -> None:
    """Outside attack 1, item 5: an archive whose database part was re-gzipped as one-byte
    gzip members (624,640 of them: 60 s of CPU per verify, 63 s per prune's read check) is
    refused by verify, the read check and restore with one line naming the member limit, as
    soon as member 1,025 begins (timed with every byte of the database part its own member);
    the metadata still lists."""
    backup_dir = hostile_dir(tmp_path, good, one_byte_members(5_000)(good))
    path = backup_dir / "daily_20250101_000000.tar.gz"
    assert read_manifest(path).backup_name == ARCHIVE
    fault = f"more than {MAX_MEMBERS} gzip members"
    with pytest.raises(CorruptArchiveError, match=fault) as err:
        read_check(path)
    assert "\n" not in str(err.value) and "daily_20250101_000000" in str(err.value)
    with (
        pytest.raises(CorruptArchiveError, match=fault),
        staging_area(backup_dir, purpose="verify") as area,
    ):
        verify_archive(path, staging=area)
    with pytest.raises(CorruptArchiveError, match=fault):
        _restore(path, good, backup_dir, dry_run=True)
    read_check(backup_dir / f"{ARCHIVE}.tar.gz")  # the good neighbour still passes
    many = tmp_path / "many.tar.gz"
    every_byte = len(gzip.decompress(good.data[good.second_member :])) + 1
    many.write_bytes(one_byte_members(every_byte)(good))
    started = time.process_time()
    with pytest.raises(CorruptArchiveError, match=fault):
        read_check(many)
    spent = time.process_time() - started
    assert spent < 2.0, f"{every_byte} members took {spent:.1f} s of CPU to refuse"


def test_up_to_the_member_limit_still_verifies(good: GoodArchive, backup_dir: Path) -> None:
    """An archive of exactly MAX_MEMBERS gzip members (a hand concatenation of many pieces)
    is still valid gzip: verify and the read check pass it with its exact content."""
    path = backup_dir / "many_members.tar.gz"
    path.write_bytes(one_byte_members(MAX_MEMBERS)(good))
    read_check(path)
    with staging_area(backup_dir, purpose="verify") as area:
        verified = verify_archive(path, staging=area)
        assert {p.name: p.read_bytes() for p in verified.staged.values()} == good.members


# --- the time edge --------------------------------------------------------------------------

#: Times at datetime's ends that UTC can hold: listed (not damaged) and normalised to UTC.
EDGE_TIMES = {
    "daily_00010101_min_minus_14h": "0001-01-01T00:00-14:00",
    "daily_00010101_min_naive": "0001-01-01T00:00:00",
    "daily_99991231_max_plus_14h": "9999-12-31T23:59:59.999999+14:00",
    "daily_99991231_max_odd_offset": "9999-12-31T23:59:59.999999+05:45:30",
    "daily_99991231_max_naive": "9999-12-31T23:59:59.999999",
}
#: Times UTC cannot hold: damaged.
OUT_OF_RANGE = {
    "daily_00010101_min_plus_14h": "0001-01-01T00:00+14:00",
    "daily_00010101_min_plus_odd": "0001-01-01T00:00:00+00:00:01",
    "daily_99991231_max_minus_14h": "9999-12-31T23:59:59.999999-14:00",
}


def test_extreme_times_sort_and_age_without_overflow(good: GoodArchive, backup_dir: Path) -> None:
    """Archives created at datetime.min/max with odd UTC offsets: those UTC can hold are listed
    in UTC and sort, age (health's max-age, the scheduler's catch-up, the metrics' timestamp,
    `list`'s UTC column) and expire without OverflowError; those it cannot are damaged."""
    for name, text in {**EDGE_TIMES, **OUT_OF_RANGE}.items():
        (backup_dir / f"{name}.tar.gz").write_bytes(created_at(text)(good))
    (backup_dir / f"{ARCHIVE}.tar.gz").write_bytes(good.data)
    archives = list_archives(backup_dir)
    status = {a.name: a.status for a in archives}
    assert {n for n, s in status.items() if s is ArchiveStatus.DAMAGED} == set(OUT_OF_RANGE)
    listed = [a for a in archives if a.status is ArchiveStatus.VERIFIED]
    assert [a.name for a in listed] == [
        "daily_99991231_max_naive",
        "daily_99991231_max_odd_offset",
        "daily_99991231_max_plus_14h",
        ARCHIVE,
        "daily_00010101_min_minus_14h",
        "daily_00010101_min_naive",
    ]
    for a in archives:
        assert a.created_at.utcoffset() == timedelta(0), (a.name, a.created_at)
        assert a.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        assert jobs.archive_json(a)["created_at"]
        assert isinstance(a.created_at.timestamp(), float)
        assert isinstance(needs_catch_up(timedelta(hours=1), timezone=UTC,
                                         last_success=a.created_at, now=NOW), bool)  # fmt: skip
        assert isinstance(policy_overdue(a.created_at, timedelta(days=1), NOW), bool)
    newest = {"daily": listed[0].created_at, "oldest": listed[-1].created_at}
    overdue = overdue_policies(newest, {"daily": timedelta(days=1), "oldest": timedelta(days=1)},
                               now=NOW)  # fmt: skip
    assert [o.policy for o in overdue] == ["oldest"]
    assert all(o.reason() for o in overdue)
    expired = select_expired(archives, keep={"daily": 1})
    assert {a.name for a in expired} == {a.name for a in listed[1:]}
