"""A prune takes only the locks of the databases its expired archives hold."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from backup_sidecar import archiver
from support.cli import Sidecar
from support.databases import make_db


def test_a_restores_safety_prune_is_not_held_up_by_another_databases_lock(
    sidecar_env: Callable[..., Sidecar], tmp_path: Path, backup_dir: Path
) -> None:
    """`user` is restored twice (pre_restore keep 1) while another holder has `arrow`'s lock,
    as a backup or restore of arrow in flight would: the prune after the second restore deletes
    the first user-only safety archive. It used to take every database's lock, wait 60 s for
    arrow's, and fail busy, leaving the safety archive past its keep."""
    user = make_db(tmp_path / "user_data.db", wal=True, rows=20)
    arrow = make_db(tmp_path / "arrow_database.db", wal=False, rows=20)
    sc = sidecar_env(user=user, arrow=arrow, SIDECAR_POLICIES__PRE_RESTORE__KEEP="1")
    made = sc.run("backup", "--db", "user", "--name", "user_only", "--json")
    assert made.returncode == 0, made.stderr
    with archiver.database_locks(backup_dir, ["arrow"]):
        for _ in range(2):
            done = sc.run("restore", "user_only", "--db", "user", "--force", "--json")
            assert done.returncode == 0, done.stderr
            assert '"prune_failed"' not in done.stderr, done.stderr
        safety = json.loads(done.stdout)["pre_restore_archive"]
    left = sorted(p.name for p in backup_dir.glob("pre_restore_*.tar.gz"))
    assert left == [f"{safety}.tar.gz"]
