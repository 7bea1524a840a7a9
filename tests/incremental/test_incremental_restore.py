"""Restore of any backup in a chain through the archives' verify, pre-restore and hot-restore
path, with a real writer committing; `export NAME` as a standalone seed-compatible archive."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from backup_sidecar import jobs
from backup_sidecar.archiver import list_archives
from support.archives import archive_metadata, gnu_tar_extract, gnu_tar_names
from support.cli import one_error_line, run_cli
from support.databases import Writer, count, integrity, make_db
from support.incremental import incremental_config, incremental_runtime, rebuild_to


def _insert(db: Path, rows: int, tag: str) -> None:
    conn = sqlite3.connect(db, timeout=30)
    with conn:
        conn.executemany(
            "INSERT INTO items(body) VALUES (?)", [(f"{tag}{i}",) for i in range(rows)]
        )
    conn.close()


@pytest.mark.parametrize("wal", [True, False], ids=["wal", "rollback"])
def test_the_middle_backup_of_a_chain_restores_into_the_running_application(
    tmp_path: Path, backup_dir: Path, writer_process: Callable[..., Writer], wal: bool
) -> None:
    """Three backups of a chain with rows added between them, taken while a writer commits;
    restoring the second while it still commits puts its rows back in the live file (the
    writer goes on without an error), and the pre_restore archive, verified, holds every
    commit made before the restore."""
    user = make_db(tmp_path / "user_data.db", wal=wal, rows=1000)
    rt = incremental_runtime(backup_dir, {"user": user})
    writer = writer_process(user, rate=100.0)  # its table is in every backup
    names = []
    for step in range(3):
        _insert(user, 200, f"step{step}-")
        names.append(jobs.run_backup(rt, policy="hourly").name)
    before = writer.committed()
    result = jobs.run_restore(rt, names[1])
    assert result.restored == ("user",) and result.pre_restore_archive
    assert count(user) == 1400  # 1000 + the 200 of steps 0 and 1
    report = writer.stop()
    assert report["errors"] == 0
    safety = next(a for a in list_archives(backup_dir) if a.name == result.pre_restore_archive)
    assert safety.status.value == "verified"
    saved = gnu_tar_extract(safety.path, tmp_path / "saved") / "user_data.db"
    assert count(saved) == 1600
    assert count(saved, "SELECT count(*) FROM ticks") >= before
    assert integrity(user) == "ok"


def test_export_is_a_standalone_archive_tar_verify_and_restore_read(
    tmp_path: Path, backup_dir: Path
) -> None:
    """`export NAME --out FILE`: GNU tar lists backup_metadata.json then the seed's member
    names, and extracts images byte-equal to the rebuilt ones; the metadata has the seed's
    keys; `verify FILE` passes; a second export to the same FILE is refused, FILE unchanged."""
    user = make_db(tmp_path / "user_data.db", wal=True, rows=800)
    arrow = make_db(tmp_path / "arrow_database.db", wal=False, rows=100)
    cfg = incremental_config(tmp_path / "s.yaml", backup_dir, {"user": user, "arrow": arrow})
    names = []
    for step in range(2):
        _insert(user, 50, f"s{step}-")
        result = run_cli("backup", "--policy", "hourly", "--json", config=cfg)
        assert result.returncode == 0, result.stderr
        names.append(json.loads(result.stdout)["name"])
    out = tmp_path / "exported.tar.gz"
    result = run_cli("export", names[0], "--out", str(out), config=cfg)
    assert result.returncode == 0, result.stderr
    assert gnu_tar_names(out) == ["backup_metadata.json", "arrow_database.db", "user_data.db"]
    files = gnu_tar_extract(out, tmp_path / "x")
    rebuilt = rebuild_to(backup_dir, "user", names[0], tmp_path / "r.db")
    data = (files / "user_data.db").read_bytes()
    assert hashlib.sha256(data).hexdigest() == rebuilt.image_sha256
    assert count(files / "user_data.db") == 850
    meta = archive_metadata(out)
    assert meta["backup_name"] == names[0] and meta["version"] == "1.0.0"
    assert meta["includes"] == {"arrow_database": True, "user_database": True}
    assert meta["user_db_stats"]["tables"]["items"] == 850
    verified = run_cli("verify", str(out), config=cfg)
    assert verified.returncode == 0, verified.stderr
    before = out.read_bytes()
    again = run_cli("export", names[0], "--out", str(out), config=cfg)
    assert again.returncode == 1 and "exported.tar.gz" in one_error_line(again)
    assert out.read_bytes() == before
    missing = run_cli("export", "nope", config=cfg)
    assert missing.returncode == 1 and "nope" in one_error_line(missing)
