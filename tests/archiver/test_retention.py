"""Retention: the pure selection rule as properties, and `prune`/`cleanup` through the real CLI."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backup_sidecar.archiver import (
    ArchiveInfo,
    ArchiveStatus,
    DatabaseSpec,
    create_backup,
    select_expired,
)
from support.databases import make_db

POLICIES = ("daily", "weekly", "manual", "pre_restore")
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def newest_first(group: list[ArchiveInfo]) -> list[ArchiveInfo]:
    return sorted(group, key=lambda a: (a.created_at, a.name), reverse=True)


@st.composite
def archive_sets(draw: st.DrawFn) -> tuple[list[ArchiveInfo], dict[str, int]]:
    """Archives of random policies, statuses and times (ties included), and a keep per policy."""
    count = draw(st.integers(0, 25))
    archives = []
    for i in range(count):
        policy = draw(st.sampled_from(POLICIES))
        archives.append(
            ArchiveInfo(
                name=f"{policy}_{i:03d}",
                path=Path(f"/nonexistent/{policy}_{i:03d}.tar.gz"),
                size_bytes=1,
                created_at=EPOCH + timedelta(hours=draw(st.integers(0, 30))),
                status=draw(st.sampled_from(list(ArchiveStatus))),
                policy=policy,
            )
        )
    keep = draw(st.dictionaries(st.sampled_from(POLICIES), st.integers(0, 5)))
    return archives, keep


@settings(max_examples=400, deadline=None)
@given(archive_sets())
def test_select_expired_properties(case: tuple[list[ArchiveInfo], dict[str, int]]) -> None:
    """Per policy: the newest verified archive and every damaged one survive; exactly min(K, n)
    non-damaged archives stay (K+1 when the newest verified is not among the K newest); every
    expired archive is no newer than any kept one except the protected newest verified; a
    policy without a keep count expires nothing."""
    archives, keep = case
    expired = select_expired(archives, keep=keep)
    expired_ids = {id(a) for a in expired}
    assert len(expired_ids) == len(expired), "an archive was expired twice"
    for archive in expired:
        assert archive.status is not ArchiveStatus.DAMAGED
        assert archive.policy in keep
    for policy in POLICIES:
        group = newest_first([a for a in archives if a.policy == policy])
        live = [a for a in group if a.status is not ArchiveStatus.DAMAGED]
        verified = [a for a in live if a.status is ArchiveStatus.VERIFIED]
        kept = [a for a in live if id(a) not in expired_ids]
        if policy not in keep:
            assert kept == live
            continue
        k = keep[policy]
        if verified:
            assert id(verified[0]) not in expired_ids, "newest verified archive expired"
        protected_outside = bool(verified) and verified[0] not in live[:k]
        assert len(kept) == (k + 1 if protected_outside else min(k, len(live)))
        others = [a for a in kept if not (verified and a is verified[0])]
        for gone in (a for a in live if id(a) in expired_ids):
            for stay in others:
                assert gone.created_at <= stay.created_at, (gone.name, stay.name)


@settings(max_examples=100, deadline=None)
@given(archive_sets(), st.sets(st.sampled_from(POLICIES)))
def test_select_expired_only_touches_chosen_policies(
    case: tuple[list[ArchiveInfo], dict[str, int]], chosen: set[str]
) -> None:
    """With ``policies=`` given, archives of other policies are never expired, and the chosen
    ones expire exactly as they would alone."""
    archives, keep = case
    expired = select_expired(archives, keep=keep, policies=chosen)
    assert all(a.policy in chosen for a in expired)
    alone = select_expired([a for a in archives if a.policy in chosen], keep=keep)
    assert {id(a) for a in expired} == {id(a) for a in alone}


def test_select_expired_keep_zero_still_spares_newest_verified() -> None:
    """keep=0 expires every archive of the policy except its newest verified one."""
    archives = [
        ArchiveInfo(
            name=f"daily_{i}",
            path=Path(f"/x/daily_{i}.tar.gz"),
            size_bytes=1,
            created_at=EPOCH + timedelta(days=i),
            status=status,
            policy="daily",
        )
        for i, status in enumerate(
            [ArchiveStatus.VERIFIED, ArchiveStatus.VERIFIED, ArchiveStatus.LEGACY]
        )
    ]
    assert [a.name for a in select_expired(archives, keep={"daily": 0})] == ["daily_2", "daily_0"]


@st.composite
def archive_sets_with_duplicates(
    draw: st.DrawFn,
) -> tuple[list[ArchiveInfo], list[ArchiveInfo], dict[str, int]]:
    """An archive set as above (each archive its own file and restore point), and the same set
    with extra names of some archives: hard links (same inode) and byte copies (another inode,
    the same restore_point_id; only where the metadata records checksums), renamed ``-2``,
    ``-3``."""
    archives, keep = draw(archive_sets())
    originals = [
        dataclasses.replace(
            a,
            file_id=(1, i),
            restore_point=None if a.status is ArchiveStatus.LEGACY else f"point-{i}",
        )
        for i, a in enumerate(archives)
    ]
    extra = []
    for i, a in enumerate(originals):
        for n in range(2, 2 + draw(st.integers(0, 2))):
            copy = a.restore_point is not None and draw(st.booleans())
            extra.append(
                dataclasses.replace(
                    a,
                    name=f"{a.name}-{n}",
                    path=a.path.with_name(f"{a.name}-{n}.tar.gz"),
                    file_id=(1, 1000 * n + i) if copy else a.file_id,
                    copy_of=a.name,
                )
            )
    mixed = draw(st.permutations(originals + extra))
    return originals, mixed, keep


@settings(max_examples=300, deadline=None)
@given(archive_sets_with_duplicates())
def test_links_and_copies_are_one_restore_point(
    case: tuple[list[ArchiveInfo], list[ArchiveInfo], dict[str, int]],
) -> None:
    """Outside attack 1, item 7: a hard link or a byte copy of an archive counted as another
    restore point, so `ln X X-2; prune --keep 2` deleted the only other distinct archive.
    Property: adding links and copies changes nothing about which originals expire; an extra
    name is expired exactly when its original is (never the last name of a kept point)."""
    originals, mixed, keep = case
    alone = {a.name for a in select_expired(originals, keep=keep)}
    expired = {a.name for a in select_expired(mixed, keep=keep)}
    for a in mixed:
        original = a.copy_of or a.name
        assert (a.name in expired) == (original in alone), (a.name, sorted(expired), alone)


# --- the real CLI ---------------------------------------------------------------------------


@pytest.fixture
def populated(tmp_path: Path, backup_dir: Path) -> dict[str, list[Path]]:
    """Three daily, two weekly and three pre_restore archives of one real database, one hour
    apart (oldest first per policy)."""
    db = make_db(tmp_path / "user_data.db", wal=True, rows=20)
    made: dict[str, list[Path]] = {}
    hour = 0
    for policy, count in (("daily", 3), ("weekly", 2), ("pre_restore", 3)):
        for _ in range(count):
            now = EPOCH + timedelta(hours=hour)
            hour += 1
            info = create_backup(
                [DatabaseSpec("user", db)],
                backup_dir=backup_dir,
                name=f"{policy}_{now:%Y%m%d_%H%M%S}",
                policy=policy,
                now=now,
            )
            made.setdefault(policy, []).append(info.path)
    return made


@pytest.fixture
def cli(tmp_path: Path, sidecar_env: Callable[..., Any]) -> Any:
    return sidecar_env(user=tmp_path / "user_data.db")


def archives_in(backup_dir: Path) -> set[str]:
    return {p.name for p in backup_dir.glob("*.tar.gz")}


def test_prune_dry_run_deletes_nothing(populated: dict[str, list[Path]], cli: Any) -> None:
    """``prune --keep 1 --dry-run`` prints each archive it would delete, and each it keeps with
    the rule that keeps it (``last 1``; ``pre_restore`` under its own keep 10), and deletes none."""
    before = archives_in(cli.backup_dir)
    result = cli.run("prune", "--keep", "1", "--dry-run")
    assert result.returncode == 0, result.stderr
    expected = populated["daily"][:2] + populated["weekly"][:1]
    lines = result.stdout.splitlines()
    assert sorted(x for x in lines if x.startswith("would delete")) == sorted(
        f"would delete {p}" for p in expected
    )
    kept = [populated["daily"][2], populated["weekly"][1], populated["pre_restore"][2]]
    assert {f"would keep {p}: last 1" for p in kept} <= set(lines)
    assert f"would keep {populated['pre_restore'][0]}: last 3" in lines
    assert archives_in(cli.backup_dir) == before


def test_prune_keep_deletes_and_spares_pre_restore(
    populated: dict[str, list[Path]], cli: Any
) -> None:
    """``prune --keep 1`` deletes all but the newest of each scheduled policy; ``pre_restore``
    archives keep their own policy (keep 10) unless named with ``--policy``."""
    result = cli.run("prune", "--keep", "1")
    assert result.returncode == 0, result.stderr
    gone = populated["daily"][:2] + populated["weekly"][:1]
    assert sorted(result.stdout.splitlines()) == sorted(f"deleted {p}" for p in gone)
    assert archives_in(cli.backup_dir) == {
        p.name for p in [populated["daily"][2], populated["weekly"][1], *populated["pre_restore"]]
    }
    result = cli.run("prune", "--policy", "pre_restore", "--keep", "1")
    assert result.returncode == 0, result.stderr
    assert not any(p.exists() for p in populated["pre_restore"][:2])
    assert populated["pre_restore"][2].exists()


def test_cleanup_is_prune_keep(populated: dict[str, list[Path]], cli: Any) -> None:
    """The seed's ``cleanup --keep K`` prunes like ``prune --keep K``."""
    result = cli.run("cleanup", "--keep", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"deleted {populated['daily'][0]}"]
    assert not populated["daily"][0].exists()
    assert all(p.exists() for p in populated["daily"][1:] + populated["weekly"])


@pytest.fixture
def shared_flock() -> Iterator[Callable[[Path], None]]:
    """Hold a shared flock on archives, as a running verify or restore does, until teardown."""
    held: list[Any] = []

    def hold(path: Path) -> None:
        f = path.open("rb")
        fcntl.flock(f.fileno(), fcntl.LOCK_SH)
        held.append(f)

    yield hold
    for f in held:
        f.close()


def test_prune_skips_archive_being_read(
    populated: dict[str, list[Path]], cli: Any, shared_flock: Callable[[Path], None]
) -> None:
    """An expired archive held with a shared flock by a reader is skipped, not deleted, and the
    prune still deletes the others and succeeds."""
    busy, other = populated["daily"][0], populated["daily"][1]
    shared_flock(busy)
    result = cli.run("prune", "--policy", "daily", "--keep", "1")
    assert result.returncode == 0, result.stderr
    assert busy.exists()
    assert not other.exists()
    assert f"kept {busy}: in use" in result.stderr
    assert result.stdout.splitlines() == [f"deleted {other}"]


def test_prune_counts_a_hard_link_or_copy_as_one_restore_point(
    populated: dict[str, list[Path]], cli: Any
) -> None:
    """Outside attack 1, item 7, through the real CLI: with a hard link of the newest daily
    (``ln X X-2``) and a byte copy of the middle one, ``prune --keep 2`` keeps the two newest
    restore points with every name they have and deletes only the oldest; ``--keep 1`` then
    deletes the middle one's two names and keeps the newest's two."""
    oldest, middle, newest = populated["daily"]
    link = newest.with_name(newest.name.replace(".tar.gz", "-2.tar.gz"))
    os.link(newest, link)
    copy = middle.with_name(middle.name.replace(".tar.gz", "-copy.tar.gz"))
    shutil.copyfile(middle, copy)
    dry = cli.run("prune", "--policy", "daily", "--keep", "2", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert [x for x in dry.stdout.splitlines() if not x.startswith("would keep")] == [
        f"would delete {oldest}"
    ]
    done = cli.run("prune", "--policy", "daily", "--keep", "2")
    assert done.returncode == 0, done.stderr
    assert {p.name for p in cli.backup_dir.glob("daily_*")} == {
        p.name for p in (middle, copy, newest, link)
    }
    done = cli.run("prune", "--policy", "daily", "--keep", "1")
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == sorted(f"deleted {p}" for p in (middle, copy))
    assert {p.name for p in cli.backup_dir.glob("daily_*")} == {newest.name, link.name}
