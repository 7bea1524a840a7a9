"""What a crashed operation leaves behind is removed by the next one, and nothing else is."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def _abandoned_area(backup_dir: Path, name: str) -> Path:
    area = backup_dir / ".staging" / name
    area.mkdir(parents=True)
    (area / ".lock").touch()
    (area / "archive.tmp").write_bytes(b"half an archive")
    return area


def test_next_backup_removes_abandoned_staging_but_not_a_live_one(sidecar_env, wal_db) -> None:
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


def test_next_restore_removes_a_dead_restores_new_file(sidecar_env, rollback_db) -> None:
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
