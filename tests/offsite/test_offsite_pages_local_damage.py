"""A damaged local pack must not block `restore NAME --from-offsite` of a good offsite copy
(outside attack on issues 15/16, item 3): the fetch used the local pack as it was (whether
marked ``.damaged`` or not) and failed, blaming the offsite object. Now a local pack that is
marked damaged or is not the uploaded bytes is fetched from offsite instead, checked in
staging, and put in place of the local one."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from backup_sidecar import jobs
from support.cli import clean_env, run_cli
from support.databases import dump, integrity, make_db
from support.offsite_pages import incremental_site


@pytest.mark.parametrize("case", ["flipped", "flipped and marked", "manifest moved away"])
def test_a_damaged_local_pack_is_fetched_from_offsite(tmp_path: Path, case: str) -> None:
    """One byte flipped in the local pack of user's backup (and, by case, the pack marked
    damaged, or the local manifest moved away): `restore NAME --from-offsite --force`
    succeeds with the backup's data, says the local pack was refused, and leaves the local
    pack mended (the uploaded bytes: a later local restore works, the mark is gone)."""
    dbs = {
        "user": make_db(tmp_path / "data" / "user.db", wal=True, rows=300),
        "audit": make_db(tmp_path / "data" / "audit.db", wal=False, rows=100),
    }
    site = incremental_site(
        tmp_path, dbs, offsite={"url": f"file://{tmp_path / 'offsite'}"}, environ={}
    )
    name = jobs.run_backup(site.rt, policy="hourly").name
    want = {db: dump(path) for db, path in dbs.items()}
    assert site.uploader.sync() == 1
    store = tmp_path / "backups" / "pages" / "user"
    packs = sorted((store / "packs").glob("*.pack"))
    assert packs
    pack = packs[0]
    good = pack.read_bytes()
    flipped = bytearray(good)
    flipped[len(flipped) // 3] ^= 0x20
    pack.write_bytes(bytes(flipped))
    if case == "flipped and marked":
        pack.with_suffix(".damaged").write_text("slot 3 does not match its SHA-256")
    if case == "manifest moved away":
        (store / "manifests" / f"{name}.json").rename(tmp_path / "moved.json")
    conn = sqlite3.connect(dbs["user"])
    conn.execute("DELETE FROM items")
    conn.commit()
    conn.close()

    env = clean_env()
    done = run_cli("restore", name, "--from-offsite", "--force", config=site.config, env=env)
    assert done.returncode == 0, done.stderr
    assert f"user/{pack.stem} were damaged" in done.stderr, done.stderr
    for db, path in dbs.items():
        assert dump(path) == want[db]
        assert integrity(path) == "ok"
    assert pack.read_bytes() == good
    assert not pack.with_suffix(".damaged").exists()
    again = run_cli("restore", name, "--force", config=site.config, env=env)  # local only
    assert again.returncode == 0, again.stderr
    assert dump(dbs["user"]) == want["user"]


def test_a_local_pack_that_is_sound_is_not_downloaded(tmp_path: Path) -> None:
    """The guard's other side: with the local manifest moved away and the packs intact, the
    fetch copies the local packs (nothing refused) and the restore succeeds."""
    dbs = {"user": make_db(tmp_path / "data" / "user.db", wal=True, rows=300)}
    site = incremental_site(
        tmp_path, dbs, offsite={"url": f"file://{tmp_path / 'offsite'}"}, environ={}
    )
    name = jobs.run_backup(site.rt, policy="hourly").name
    want = dump(dbs["user"])
    assert site.uploader.sync() == 1
    store = tmp_path / "backups" / "pages" / "user"
    (store / "manifests" / f"{name}.json").rename(tmp_path / "moved.json")
    shutil.rmtree(tmp_path / "data")
    env = clean_env()
    done = run_cli("restore", name, "--from-offsite", "--force", config=site.config, env=env)
    assert done.returncode == 0, done.stderr
    assert "were damaged" not in done.stderr, done.stderr
    assert dump(dbs["user"]) == want
