"""Archive names: claimed once, never overwritten, and default names never fail a backup."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backup_sidecar.archiver import DatabaseSpec, clean_leftovers, create_backup
from backup_sidecar.archiver.staging import reserve_name
from backup_sidecar.errors import ArchiveExistsError

NOW = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)


def test_concurrent_default_names_all_get_distinct_archives(backup_dir: Path, wal_db) -> None:
    """Eight backups started at the same wall-clock second with the same default name (as
    after a clock step back, or queued behind a restore) all succeed as distinct archives."""
    spec = DatabaseSpec("user", wal_db)
    with ThreadPoolExecutor(8) as pool:
        infos = list(
            pool.map(
                lambda _: create_backup(
                    [spec], backup_dir=backup_dir, name="daily_20261128_030000",
                    policy="daily", now=NOW, unique=True,
                ),
                range(8),
            )
        )  # fmt: skip
    names = sorted(i.name for i in infos)
    assert len(set(names)) == 8
    assert "daily_20261128_030000" in names
    assert sorted(p.name for p in backup_dir.glob("*.tar.gz")) == sorted(
        f"{n}.tar.gz" for n in names
    )


def test_explicit_name_has_exactly_one_winner(backup_dir: Path, wal_db) -> None:
    """Of several backups racing for one explicit name, exactly one publishes it; the others
    raise ArchiveExistsError and leave the winner's bytes alone."""
    spec = DatabaseSpec("user", wal_db)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt(_: int) -> None:
        try:
            create_backup([spec], backup_dir=backup_dir, name="same", policy="manual", now=NOW)
            result = "ok"
        except ArchiveExistsError:
            result = "exists"
        with lock:
            outcomes.append(result)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(attempt, range(6)))
    assert outcomes.count("ok") == 1
    assert outcomes.count("exists") == 5
    assert [p.name for p in backup_dir.glob("*.tar.gz")] == ["same.tar.gz"]


def test_a_held_reservation_keeps_the_name_and_survives_cleanup(backup_dir: Path) -> None:
    """While one writer holds a name's reservation, another asking for it exactly is refused
    and a non-exact one gets the next suffix; start-up cleanup does not remove the live
    reservation, and the name is free again once released."""
    with reserve_name(backup_dir, "nightly", exact=True) as first:
        assert first == "nightly"
        with pytest.raises(ArchiveExistsError), reserve_name(backup_dir, "nightly", exact=True):
            pass
        with reserve_name(backup_dir, "nightly", exact=False) as second:
            assert second == "nightly-2"
        assert clean_leftovers(backup_dir) == []
        assert (backup_dir / ".staging" / "nightly.name").exists()
    assert not (backup_dir / ".staging" / "nightly.name").exists()
    with reserve_name(backup_dir, "nightly", exact=True) as again:
        assert again == "nightly"


def test_a_dead_writers_reservation_is_cleaned(backup_dir: Path) -> None:
    """A reservation file nobody holds (its process died) is removed by the cleanup."""
    staging = backup_dir / ".staging"
    staging.mkdir()
    orphan = staging / "daily_20261128_030000.name"
    orphan.touch()
    assert clean_leftovers(backup_dir) == [orphan]
    assert not orphan.exists()
