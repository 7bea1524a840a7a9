"""A ``file://`` store copied to another disk with ``cp -a`` (a NAS or USB disk moved): every
object has a new inode, so its ETag (``inode-mtime_us-size``) is not the one its checksum
record holds. The copy must still confirm (list, restore by name), and an object rewritten in
place with other bytes must still be refused, with a message saying it is unconfirmed and
why (it used to say "no offsite object named ...")."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import yaml

from backup_sidecar import jobs
from backup_sidecar.offsite import Store, parse_target
from support.cli import clean_env, one_error_line, run_cli
from support.databases import dump, integrity, make_db
from support.offsite import fast_retry
from support.offsite_pages import incremental_site, page_objects


def _copied_store(tmp_path: Path) -> tuple[dict[str, Path], str, dict[str, Any], Path]:
    """Two incremental backups uploaded to ``offsite``, the store copied with ``cp -a`` to
    ``moved``, the host lost: (databases, the first backup, their dumps at it, a
    configuration naming the copy)."""
    dbs = {
        "user": make_db(tmp_path / "data" / "user.db", wal=True, rows=300),
        "audit": make_db(tmp_path / "data" / "audit.db", wal=False, rows=100),
    }
    url = f"file://{tmp_path / 'offsite'}"
    site = incremental_site(tmp_path, dbs, offsite={"url": url}, environ={})
    first = jobs.run_backup(site.rt, policy="hourly").name
    want = {db: dump(path) for db, path in dbs.items()}
    conn = sqlite3.connect(dbs["user"])
    conn.executemany("INSERT INTO items(body) VALUES (?)", [(f"later-{i}",) for i in range(50)])
    conn.commit()
    conn.close()
    jobs.run_backup(site.rt, policy="hourly")
    assert site.uploader.sync() == 2
    moved = tmp_path / "moved"
    subprocess.run(["cp", "-a", str(tmp_path / "offsite"), str(moved)], check=True)
    shutil.rmtree(tmp_path / "offsite")  # the old disk is gone
    shutil.rmtree(tmp_path / "data")
    shutil.rmtree(tmp_path / "backups")
    body = yaml.safe_load(site.config.read_text())
    body["offsite"]["url"] = f"file://{moved}"
    config = tmp_path / "moved.yaml"
    config.write_text(yaml.safe_dump(body))
    return dbs, first, want, config


def test_a_store_copied_with_cp_a_confirms_and_restores(tmp_path: Path) -> None:
    """Every object of the copied store (new inodes, same times and sizes) is confirmed, and
    `restore NAME --from-offsite` from the copy brings back the backup's data (it failed:
    every object "replaced since its upload", then "no offsite object named")."""
    dbs, first, want, config = _copied_store(tmp_path)
    moved = Store(parse_target(f"file://{tmp_path / 'moved'}"), retry=fast_retry())
    objects = page_objects(moved)
    assert objects and all(objects.values()), objects
    done = run_cli("restore", first, "--from-offsite", "--force", config=config, env=clean_env())
    assert done.returncode == 0, done.stderr
    for db, path in dbs.items():
        assert dump(path) == want[db]
        assert integrity(path) == "ok"


def test_an_object_rewritten_in_place_in_a_copied_store_stays_unconfirmed(
    tmp_path: Path,
) -> None:
    """In the copied store, the first backup's manifest object rewritten in place with other
    bytes of the same size (a new modification time): it is unconfirmed, and the restore
    fails with one line naming the object, saying it is unconfirmed and why; no database is
    written."""
    dbs, first, _, config = _copied_store(tmp_path)
    victim = tmp_path / "moved" / "pages" / "user" / "manifests" / f"{first}.json"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    with victim.open("r+b") as f:
        f.write(bytes(data))
    moved = Store(parse_target(f"file://{tmp_path / 'moved'}"), retry=fast_retry())
    objects = page_objects(moved)
    assert objects[f"pages/user/manifests/{first}.json"] is False
    assert sum(1 for ok in objects.values() if not ok) == 1, objects
    failed = run_cli("restore", first, "--from-offsite", "--force", config=config, env=clean_env())
    assert failed.returncode != 0
    line = one_error_line(failed)
    assert f"pages/user/manifests/{first}.json" in line, line
    assert "unconfirmed" in line and "replaced since its upload" in line, line
    assert "no offsite object named" not in line, line
    assert not dbs["user"].exists()
