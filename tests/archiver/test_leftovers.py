"""What a crashed operation leaves behind is removed by the next one, and nothing else is."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from backup_sidecar.archiver import staging
from backup_sidecar.archiver.leftovers import clean_leftovers
from backup_sidecar.archiver.staging import reserve_name, staging_area
from support.cli import Sidecar


def _abandoned_area(backup_dir: Path, name: str) -> Path:
    area = backup_dir / ".staging" / name
    area.mkdir(parents=True)
    (area / ".lock").touch()
    (area / "archive.tmp").write_bytes(b"half an archive")
    return area


def test_next_backup_removes_abandoned_staging_but_not_a_live_one(
    sidecar_env: Callable[..., Sidecar], wal_db: Path
) -> None:
    """A staging area nobody holds (its process died) is removed by the next CLI backup; one
    whose lock is held by a running process is left alone."""
    sidecar = sidecar_env(user=wal_db)
    dead = _abandoned_area(sidecar.backup_dir, "backup-dead")
    alive = _abandoned_area(sidecar.backup_dir, "backup-alive")
    fd = os.open(alive / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        result = sidecar.run("backup", "--user-db-only")
        assert result.returncode == 0, result.stderr
        assert not dead.exists()
        assert (alive / "archive.tmp").exists()
    finally:
        os.close(fd)


def test_next_restore_removes_a_dead_restores_new_file(
    sidecar_env: Callable[..., Sidecar], rollback_db: Path
) -> None:
    """A new database half-written by a restore whose process died (`.<file>.restore-<pid>`)
    is removed by the next restore; the live database is untouched by the cleanup."""
    user = rollback_db
    sidecar = sidecar_env(user=user)
    assert sidecar.run("backup", "--user-db-only", "--name", "base").returncode == 0
    dead_pid = 2**22 + 12345  # above the kernel's pid_max default: never a live process
    leftover = user.parent / f".user_data.db.restore-{dead_pid}"
    leftover.write_bytes(b"partial")
    result = sidecar.run("restore", "base", "--user-db-only", "--force")
    assert result.returncode == 0, result.stderr
    assert not leftover.exists()
    assert user.exists()


@pytest.fixture
def cleanup_before_every_lock(
    backup_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> list[list[Path]]:
    """Run a real leftover cleanup (its own descriptors, so its flocks conflict with ours) at
    the worst instant: just before the staging code takes each of its blocking locks, which is
    when a concurrent operation's cleanup could find a lock or reservation not yet held.
    Returns what each injected cleanup removed."""
    removed: list[list[Path]] = []
    real_flock = fcntl.flock

    def flock(fd: int, op: int) -> None:
        if op == fcntl.LOCK_EX:
            removed.append(clean_leftovers(backup_dir))
        real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)  # staging.fcntl is this module
    return removed


def test_a_staging_area_is_never_seen_unlocked_by_a_concurrent_cleanup(
    backup_dir: Path, cleanup_before_every_lock: list[list[Path]]
) -> None:
    """A cleanup running while a staging area is being set up never removes it: its lock file
    appears only once held. (Created under its own name, the lock was unlocked for an instant;
    a second backup's cleanup took the area for a dead one, and the first backup failed with
    'staging area was removed by a concurrent cleanup'.)"""
    with staging_area(backup_dir, purpose="backup") as area:
        (area / "data").write_bytes(b"staged")
        assert (area / "data").read_bytes() == b"staged"
    assert cleanup_before_every_lock, "no cleanup was injected"
    assert cleanup_before_every_lock == [[]] * len(cleanup_before_every_lock)


def test_a_name_reservation_is_never_seen_unlocked_by_a_concurrent_cleanup(
    backup_dir: Path, cleanup_before_every_lock: list[list[Path]]
) -> None:
    """A cleanup running while an exact archive name is being claimed never removes the claim,
    so the claim never fails as 'already exists' for a name nobody has."""
    with reserve_name(backup_dir, "manual_exact", exact=True) as name:
        assert name == "manual_exact"
        assert (backup_dir / ".staging" / "manual_exact.name").is_file()
    assert cleanup_before_every_lock == [[]] * len(cleanup_before_every_lock)
    assert not list((backup_dir / ".staging").iterdir())


def test_a_claim_file_of_a_dead_process_is_removed_after_the_grace_period(
    backup_dir: Path,
) -> None:
    """A `.pending-*` claim file whose maker died before linking it is left alone while young
    (it may be being made right now) and removed once older than the grace period."""
    staging_dir = backup_dir / ".staging"
    staging_dir.mkdir()
    young = staging_dir / ".pending-young"
    old = staging_dir / ".pending-old"
    young.touch()
    old.touch()
    past = old.stat().st_mtime - 3600
    os.utime(old, (past, past))
    assert clean_leftovers(backup_dir) == [old]
    assert young.exists()


def test_a_staging_area_bears_its_name_only_once_locked(
    backup_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process killed while it sets up a staging area leaves nothing a cleaner must spare
    under the area's name: the area is made and locked under a private `.pending-` name and
    renamed only then. (Made under its own name, a daemon killed between mkdir and its lock
    left a lockless `backup-*` area that the next start kept for the grace period.)"""
    real_lock = staging._locked_new_file
    seen: list[list[str]] = []

    def dying_lock(dir_fd: int, name: str) -> int:
        seen.append(sorted(p.name for p in (backup_dir / ".staging").iterdir()))
        raise KeyboardInterrupt  # the process dies before its lock exists

    monkeypatch.setattr(staging, "_locked_new_file", dying_lock)
    with pytest.raises(KeyboardInterrupt), staging_area(backup_dir, purpose="backup"):
        pass
    assert seen and all(not n.startswith("backup-") for n in seen[0]), seen
    left = [p.name for p in (backup_dir / ".staging").iterdir()]
    assert all(n.startswith(".pending-") for n in left), left
    monkeypatch.setattr(staging, "_locked_new_file", real_lock)
    with staging_area(backup_dir, purpose="backup") as area:
        assert area.name.startswith("backup-")
        assert (area / ".lock").is_file()
