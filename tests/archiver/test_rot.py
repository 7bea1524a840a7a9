"""Archive rot: a truncated or bit-flipped archive whose metadata still reads is found by the
read check, marked damaged next to the archive, shown so by `list`, never counted as a good copy
by retention, and the older good archive survives a prune with keep 1.

Real archives of a real database are rotted on disk (cut short; one byte flipped inside the
database's gzip member) and driven through the real CLI (`prune`, `list`, `scrub`) and the jobs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backup_sidecar import jobs
from backup_sidecar.archiver import (
    ArchiveInfo,
    ArchiveStatus,
    DatabaseSpec,
    ReadCheckCache,
    create_backup,
    list_archives,
    mark_damaged,
    read_check,
    select_expired,
)
from backup_sidecar.archiver.damage import marker_path
from backup_sidecar.errors import CorruptArchiveError
from support.archives import (
    HOSTILE_BYTES,
    ROTS,
    flip_database_byte,
    second_member_offset,
    truncate,
)
from support.databases import make_db

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def two_dailies(tmp_path: Path, backup_dir: Path) -> tuple[Path, Path]:
    """An older and a newer `daily` archive of one real WAL database (oldest first)."""
    db = make_db(tmp_path / "user_data.db", wal=True, rows=3000)
    made = []
    for hours in (0, 1):
        now = T0 + timedelta(hours=hours)
        info = create_backup(
            [DatabaseSpec("user", db)],
            backup_dir=backup_dir,
            name=f"daily_{now:%Y%m%d_%H%M%S}",
            policy="daily",
            now=now,
        )
        made.append(info.path)
    return made[0], made[1]


@pytest.fixture
def cli(tmp_path: Path, sidecar_env: Callable[..., Any]) -> Any:
    return sidecar_env(user=tmp_path / "user_data.db")


def listed(cli: Any) -> dict[str, dict[str, Any]]:
    result = cli.run("list", "--json")
    assert result.returncode == 0, result.stderr
    return {a["name"]: a for a in json.loads(result.stdout)}


@pytest.mark.parametrize("rot", list(ROTS))
def test_prune_keep_one_keeps_the_older_good_archive_when_the_newest_rotted(
    rot: str, two_dailies: tuple[Path, Path], cli: Any
) -> None:
    """The newest archive rots on disk (its metadata still reads, so `list` said `verified`):
    `prune --keep 1` reads it to the end first, marks it damaged, keeps it for inspection, and
    does not count it, so the older good archive stays. Before the fix the good one was
    deleted and only the rotten one was left."""
    older, newer = two_dailies
    ROTS[rot](newer)
    result = cli.run("prune", "--policy", "daily", "--keep", "1")
    assert result.returncode == 0, result.stderr
    assert older.exists(), "the only good archive was deleted"
    assert newer.exists(), "a damaged archive is kept for inspection"
    assert f"damaged {newer}" in result.stderr
    assert marker_path(newer).is_file()
    shown = listed(cli)
    assert shown[older.name.removesuffix(".tar.gz")]["status"] == "verified"
    bad = shown[newer.name.removesuffix(".tar.gz")]
    assert bad["status"] == "damaged"
    assert bad["error"].startswith("marked damaged by prune at ")
    # A second prune neither deletes the good one nor the damaged one.
    again = cli.run("prune", "--policy", "daily", "--keep", "1")
    assert again.returncode == 0, again.stderr
    assert older.exists() and newer.exists()


def test_prune_dry_run_predicts_and_marks_nothing(two_dailies: tuple[Path, Path], cli: Any) -> None:
    """`prune --dry-run` runs the same read check: it reports the damage and deletes nothing,
    and writes no marker (a dry run changes nothing)."""
    _, newer = two_dailies
    truncate(newer)
    result = cli.run("prune", "--policy", "daily", "--keep", "1", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["deleted"] == []
    assert [d["archive"] for d in report["damaged"]] == [newer.name.removesuffix(".tar.gz")]
    assert not marker_path(newer).exists()


@pytest.mark.parametrize("rot", list(ROTS))
def test_read_check_names_the_fault(rot: str, two_dailies: tuple[Path, Path]) -> None:
    """The read check passes the good archive and refuses each rot with a one-line fault."""
    older, newer = two_dailies
    read_check(older)
    ROTS[rot](newer)
    with pytest.raises(CorruptArchiveError) as caught:
        read_check(newer)
    expected = {
        "truncated": "truncated",
        "flipped_database_byte": "gzip",
        "database_changed_under_valid_gzip": "sha256 mismatch",
    }[rot]
    assert expected in caught.value.fault
    assert "\n" not in str(caught.value)


def test_cache_is_keyed_by_identity_and_scrub_rereads(two_dailies: tuple[Path, Path]) -> None:
    """A cached pass is reused while device, inode, size and mtime are unchanged (bit rot
    changes none of them); `recheck` (the scrub) reads again and finds the rot; a file put
    back (a new mtime) is a new identity and is read again by `check` too."""
    _, newer = two_dailies
    cache = ReadCheckCache()
    assert cache.check(newer) is None
    st = newer.stat()
    original = newer.read_bytes()
    data = bytearray(original)
    data[second_member_offset(bytes(data)) + 40] ^= 0x10
    newer.write_bytes(bytes(data))
    os.utime(newer, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.check(newer) is None, "same identity: the cached result"
    assert cache.recheck(newer) is not None
    assert cache.check(newer) is not None, "the recheck replaced the cached pass"
    newer.write_bytes(original)
    os.utime(newer, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert cache.check(newer) is None


def test_scrub_marks_rot_and_list_shows_the_reason(
    two_dailies: tuple[Path, Path], cli: Any
) -> None:
    """`scrub` reads every archive, marks the rotten one (exit 1, its name and fault printed),
    `list` shows it damaged with the marker's reason while the good one stays verified; a second
    scrub skips the marked one; deleting the archive by hand lets the next scrub remove its
    orphaned marker."""
    older, newer = two_dailies
    flip_database_byte(newer)
    result = cli.run("scrub")
    assert result.returncode == 1, result.stderr
    name = newer.name.removesuffix(".tar.gz")
    assert f"{name}: damaged: " in result.stdout
    assert "1 ok, 1 damaged" in result.stdout
    marker = json.loads(marker_path(newer).read_text())
    assert marker["found_by"] == "scrub" and marker["reason"]
    shown = listed(cli)
    assert shown[name]["status"] == "damaged"
    assert marker["reason"] in shown[name]["error"]
    assert shown[older.name.removesuffix(".tar.gz")]["status"] == "verified"
    table = cli.run("list")
    row = next(line for line in table.stdout.splitlines() if line.startswith(name))
    assert "damaged" in row and "marked damaged by scrub" in row
    again = cli.run("scrub", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["skipped"] == [name]
    newer.unlink()
    cli.run("scrub")
    assert not marker_path(newer).exists()


def test_marker_is_untrusted_input(two_dailies: tuple[Path, Path], backup_dir: Path) -> None:
    """A marker that is not JSON, too large, or a link still marks its archive (with a reason
    saying the marker is unreadable) and never stops the listing; a marker about an earlier file
    of that name (size or mtime differ) is ignored; writing a marker replaces a planted link
    instead of writing through it."""
    older, newer = two_dailies
    outside = backup_dir.parent / "victim.txt"
    outside.write_text("untouched")
    marker_path(newer).symlink_to(outside)
    marker_path(older).write_bytes(b"{" * 100_000)
    by_name = {a.path: a for a in list_archives(backup_dir)}
    assert by_name[newer].status is ArchiveStatus.DAMAGED
    assert "unreadable" in (by_name[newer].error or "")
    assert by_name[older].status is ArchiveStatus.DAMAGED
    assert "larger than 4096 bytes" in (by_name[older].error or "")
    mark_damaged(newer, reason="line one\nline two\x1b[31m", found_by="test", now=T0)
    assert outside.read_text() == "untouched"
    assert not marker_path(newer).is_symlink()
    info = {a.path: a for a in list_archives(backup_dir)}[newer]
    assert info.error == f"marked damaged by test at {T0.isoformat()}: line one line two?[31m"
    doc = json.loads(marker_path(newer).read_text())
    doc["size_bytes"] += 1  # as if the archive was replaced by a good copy since
    marker_path(newer).write_text(json.dumps(doc))
    info = {a.path: a for a in list_archives(backup_dir)}[newer]
    assert info.status is ArchiveStatus.VERIFIED


def test_failed_drill_marks_its_archive(two_dailies: tuple[Path, Path], backup_dir: Path) -> None:
    """A restore drill whose archive fails verification marks that archive damaged, so the next
    drill and retention move on to the older good one."""
    older, newer = two_dailies
    flip_database_byte(newer)
    rt = jobs.Runtime(
        backup_dir=backup_dir,
        databases={"user": DatabaseSpec("user", backup_dir.parent / "user_data.db")},
        keep={"daily": 1},
    )
    with pytest.raises(CorruptArchiveError):
        jobs.run_drill(rt)
    assert json.loads(marker_path(newer).read_text())["found_by"] == "drill"
    report = jobs.run_drill(rt)
    assert report.ok and report.archive == older.name.removesuffix(".tar.gz")


# --- the selection rule with a read check, as properties -----------------------------------


@st.composite
def checked_sets(draw: st.DrawFn) -> tuple[list[ArchiveInfo], int, set[int]]:
    count = draw(st.integers(0, 12))
    archives = [
        ArchiveInfo(
            name=f"daily_{i:03d}",
            path=Path(f"/nonexistent/daily_{i:03d}.tar.gz"),
            size_bytes=1,
            created_at=T0 + timedelta(hours=draw(st.integers(0, 20))),
            status=draw(st.sampled_from(list(ArchiveStatus))),
            policy="daily",
        )
        for i in range(count)
    ]
    rotten = draw(st.sets(st.integers(0, max(count - 1, 0))))
    return archives, draw(st.integers(0, 4)), rotten


@settings(max_examples=300, deadline=None)
@given(checked_sets())
def test_select_expired_never_relies_on_a_rotten_archive(
    case: tuple[list[ArchiveInfo], int, set[int]],
) -> None:
    """With a read check: the newest verified archive that passes is never expired; the
    verified ones newer than it (which failed) are neither expired nor counted among the K; no
    archive older than the anchor is checked; damaged ones are never expired."""
    archives, keep, rotten = case
    checked: list[ArchiveInfo] = []

    def good(a: ArchiveInfo) -> bool:
        checked.append(a)
        return archives.index(a) not in rotten

    expired = select_expired(archives, keep={"daily": keep}, good=good)
    ids = {id(a) for a in expired}
    order = sorted(archives, key=lambda a: (a.created_at, a.name), reverse=True)
    verified = [a for a in order if a.status is ArchiveStatus.VERIFIED]
    anchor = next((a for a in verified if archives.index(a) not in rotten), None)
    failed = verified[: verified.index(anchor)] if anchor is not None else verified
    assert checked == [*failed, *([anchor] if anchor is not None else [])]
    if anchor is not None:
        assert id(anchor) not in ids
    assert not any(id(a) in ids for a in failed)
    live = [
        a
        for a in order
        if a.status is not ArchiveStatus.DAMAGED and not any(a is f for f in failed)
    ]
    kept = [a for a in live if id(a) not in ids]
    outside = anchor is not None and anchor not in live[:keep]
    assert len(kept) == (keep + 1 if outside else min(keep, len(live)))
    assert all(a.status is not ArchiveStatus.DAMAGED for a in expired)


@pytest.mark.parametrize("case", list(HOSTILE_BYTES))
def test_read_check_turns_hostile_bytes_into_one_fault(
    case: str, two_dailies: tuple[Path, Path]
) -> None:
    """Hostile archives (deep nesting, thousands of empty members, a non-numeric pax size, a
    5,000-digit number) fail the read check with one-line faults, never an exception that
    would stop a prune or a scrub."""
    _, newer = two_dailies
    newer.write_bytes(HOSTILE_BYTES[case])
    cache = ReadCheckCache()
    fault = cache.recheck(newer)
    assert fault and "\n" not in fault
