"""Hostile file metadata in the backup directory (issue 12, item 5): a damaged archive's time.

A damaged archive is listed at its file's modification time. tmpfs keeps any 64-bit time that
``touch -d`` or ``utime`` sets (ext4 clamps to 2446), so on a real tmpfs a file dated past
datetime's year 9999 made `list` raise for the whole directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from backup_sidecar.archiver import ArchiveStatus, list_archives
from support.archives import ARCHIVE, build_good
from support.cli import cli_env, run_cli


def test_damaged_archive_dated_past_year_9999_is_listed(
    tmpfs: Callable[..., Path], tmp_path: Path
) -> None:
    """On a real tmpfs, damaged files with mtimes of +/-2^62 s are listed damaged at datetime's
    ends (clamped), beside the good archive, by the library and the CLI's `list --json`."""
    good = build_good(tmp_path / "scene")
    backup_dir = tmpfs("backups", size="8m")
    (backup_dir / f"{ARCHIVE}.tar.gz").write_bytes(good.data)
    for name, when in (("future", 2**62), ("past", -(2**62))):
        path = backup_dir / f"{name}.tar.gz"
        path.write_bytes(b"not an archive")
        os.utime(path, (0, when))
        assert abs(path.stat().st_mtime - when) < 2**40, "this tmpfs clamps times"
    listed = {a.name: a for a in list_archives(backup_dir)}
    assert listed[ARCHIVE].status is ArchiveStatus.VERIFIED
    assert listed["future"].status is ArchiveStatus.DAMAGED
    assert listed["future"].created_at == datetime.max.replace(tzinfo=UTC)
    assert listed["past"].created_at == datetime.min.replace(tzinfo=UTC)
    env = cli_env(backup_dir, arrow=good.sources["arrow"], user=good.sources["user"])
    result = run_cli("list", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert "future" in result.stdout and "past" in result.stdout
