"""Offsite retention of incremental backups (issue 16): manifests by the archives' rules
(`offsite.keep`), then the packs no kept manifest needs; never what an unreadable manifest
might need (s3 and file://)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml

from backup_sidecar import jobs
from support.cli import run_cli
from support.databases import make_db
from support.offsite_pages import (
    Place,
    confirmed_manifests,
    incremental_site,
    offsite_place,
    page_objects,
)
from support.pages import pack_files


@pytest.fixture
def place(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Place:
    return offsite_place(backend, tmp_path, request)


def _write(db: Path, tag: str) -> None:
    conn = sqlite3.connect(db)
    conn.executemany("INSERT INTO items(body) VALUES (?)", [(f"{tag}-{i}",) for i in range(100)])
    conn.commit()
    conn.close()


def _packs(objects: dict[str, bool], db: str) -> set[str]:
    prefix = f"pages/{db}/packs/"
    return {n.removeprefix(prefix).removesuffix(".pack") for n in objects if n.startswith(prefix)}


def test_expired_manifests_go_then_the_packs_only_they_needed(tmp_path: Path, place: Place) -> None:
    """`keep: 2` locally and offsite, every backup a new chain (rebase): after the third
    backup's pass the first backup's manifests are deleted offsite (counted per policy) and so
    are its packs, which no kept manifest needs; the store then holds exactly the packs of the
    local stores. A manifest planted in `user` whose record cannot be read stops `user`'s
    sweep (its needs are unknown) while `audit`'s goes on."""
    section, environ, store = place
    dbs = {
        "user": make_db(tmp_path / "data" / "user.db", wal=True, rows=200),
        "audit": make_db(tmp_path / "data" / "audit.db", wal=False, rows=100),
    }
    site = incremental_site(
        tmp_path,
        dbs,
        offsite=section,
        environ=environ,
        keep=2,
        offsite_keep=2,
        policy={"rebase": {"stored_fraction": 0.0001}},
    )
    names = []
    for step in range(3):
        _write(dbs["user"], f"s{step}")
        _write(dbs["audit"], f"s{step}")
        names.append(jobs.run_backup(site.rt, policy="hourly").name)
        site.uploader.sync()
    kept = {f"{db}/{n}" for db in dbs for n in names[1:]}
    assert confirmed_manifests(store) == kept
    assert site.metric("backup_sidecar_offsite_pruned_total", policy="hourly") == 2
    objects = page_objects(store)
    local = site.rt.backup_dir / "pages"
    for db in dbs:
        assert _packs(objects, db) == {p.removesuffix(".pack") for p in pack_files(local / db)}

    planted = "pages/user/manifests/planted.json"
    store.objects.put(store.key(planted), b"{}")
    store.objects.put(store.record_key(planted), b"not json")
    user_before = _packs(page_objects(store), "user")
    _write(dbs["user"], "s3")
    _write(dbs["audit"], "s3")
    names.append(jobs.run_backup(site.rt, policy="hourly").name)
    site.uploader.sync()
    assert confirmed_manifests(store) == {f"{db}/{n}" for db in dbs for n in names[2:]}
    objects = page_objects(store)
    assert user_before <= _packs(objects, "user")  # user's sweep refused: nothing went
    assert _packs(objects, "audit") == {
        p.removesuffix(".pack") for p in pack_files(local / "audit")
    }


def test_prune_offsite_from_the_cli_applies_the_page_rules_too(tmp_path: Path) -> None:
    """Three incremental backups uploaded with `offsite.keep.hourly: 5`; the configuration then
    keeps 1: `prune --offsite --dry-run` names the two older backups' manifests and deletes
    nothing; `prune --offsite` deletes them, and the newest stays whole (file://)."""
    section, environ, store = offsite_place("file", tmp_path)
    db = make_db(tmp_path / "data" / "user.db", wal=True, rows=200)
    site = incremental_site(
        tmp_path, {"user": db}, offsite=section, environ=environ, offsite_keep=5
    )
    names = []
    for step in range(3):
        _write(db, f"s{step}")
        names.append(jobs.run_backup(site.rt, policy="hourly").name)
    assert site.uploader.sync() == 3
    site.uploader.stop()  # the lease released, as a stopped daemon does
    config = yaml.safe_load(site.config.read_text())
    config["offsite"]["keep"] = {"hourly": 1}
    site.config.write_text(yaml.safe_dump(config))
    dry = run_cli("prune", "--offsite", "--dry-run", "--json", config=site.config)
    assert dry.returncode == 0, dry.stderr
    would = {d["object"] for d in json.loads(dry.stdout)["deleted"]}
    assert would == {f"pages/user/manifests/{n}.json" for n in names[:2]}
    assert confirmed_manifests(store) == {f"user/{n}" for n in names}
    done = run_cli("prune", "--offsite", config=site.config)
    assert done.returncode == 0, done.stderr
    assert confirmed_manifests(store) == {f"user/{names[2]}"}
    assert all(page_objects(store).values())
