"""`list --offsite` shows incremental backups; `verify --offsite NAME` downloads, rebuilds and
checks one; a pack that no longer rebuilds fails it naming the manifest object (s3, file)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from pyrage import x25519

from backup_sidecar import jobs
from backup_sidecar.offsite import Record, Store
from backup_sidecar.offsite.pagekeys import manifest_object, pack_object
from support.cli import clean_env, run_cli
from support.databases import make_db
from support.offsite_pages import Place, confirmed_packs, incremental_site, offsite_place


@pytest.fixture
def place(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Place:
    return offsite_place(backend, tmp_path, request)


def test_list_and_verify_an_incremental_copy(tmp_path: Path, place: Place) -> None:
    """One encrypted incremental backup of two databases uploaded: `list --offsite --json`
    lists it (kind incremental, both databases, confirmed) and the text table names it;
    `verify --offsite NAME` says ok for both databases, and `--latest` (the newest copy) and
    a plain `verify --offsite` (each policy's newest, as scheduled) verify it too. A pack's
    object swapped for another database's (its record forged to match): list still calls it
    confirmed (the record matches), verify fails, exit 1, naming the manifest object."""
    section, environ, store = place
    identity = x25519.Identity.generate()
    key = tmp_path / "age.txt"
    key.write_text(f"{identity}\n")
    key.chmod(0o600)
    encryption = {"recipients": [str(identity.to_public())], "identity_file": str(key)}
    dbs = {
        "user": make_db(tmp_path / "data" / "user.db", wal=True, rows=300),
        "audit": make_db(tmp_path / "data" / "audit.db", wal=False, rows=100),
    }
    site = incremental_site(
        tmp_path, dbs, offsite={**section, "encryption": encryption}, environ=environ
    )
    name = jobs.run_backup(site.rt, policy="hourly").name
    assert site.uploader.sync() == 1
    env = clean_env(**environ)
    listed = run_cli("list", "--offsite", "--json", config=site.config, env=env)
    assert listed.returncode == 0, listed.stderr
    (copy,) = json.loads(listed.stdout)["incremental"]
    assert (copy["name"], copy["kind"], copy["confirmed"]) == (name, "incremental", True)
    assert copy["databases"] == ["audit", "user"] and copy["encrypted"] is True
    table = run_cli("list", "--offsite", config=site.config, env=env)
    assert f"{name} (incremental: audit, user)" in table.stdout
    ok = run_cli("verify", "--offsite", name, "--json", config=site.config, env=env)
    assert ok.returncode == 0, ok.stderr
    (verified,) = json.loads(ok.stdout)["copies"]
    assert verified["result"] == "ok" and sorted(verified["databases"]) == ["audit", "user"]
    latest = run_cli("verify", "--offsite", "--latest", "--json", config=site.config, env=env)
    assert latest.returncode == 0, latest.stderr
    (newest,) = json.loads(latest.stdout)["copies"]  # the copy restore --latest takes first
    assert newest["result"] == "ok" and f"/manifests/{name}.json.age" in newest["object"]
    every = run_cli("verify", "--offsite", "--json", config=site.config, env=env)
    assert every.returncode == 0, every.stderr  # each policy's newest: the scheduled verify's
    assert [c["result"] for c in json.loads(every.stdout)["copies"]] == ["ok"]

    user = sorted(p.split("/")[1] for p in confirmed_packs(store) if p.startswith("user/"))
    audit = sorted(p.split("/")[1] for p in confirmed_packs(store) if p.startswith("audit/"))
    victim, donor = (
        pack_object("user", user[0], encrypted=True),
        pack_object("audit", audit[0], encrypted=True),
    )
    opened = store.objects.stream(store.key(donor), etag=None)
    assert opened is not None
    store.objects.put(store.key(victim), b"".join(bytes(c) for c in opened[1]))
    record, meta = store.read_record(donor), store.objects.head(store.key(victim))
    assert record is not None and meta is not None
    forged = dataclasses.replace(record, name=victim, etag=meta.etag)
    store.objects.put(store.record_key(victim), forged.to_json())
    bad = run_cli("verify", "--offsite", name, config=site.config, env=env)
    assert bad.returncode == 1
    assert f"pages/user/manifests/{name}.json.age" in bad.stderr, bad.stderr


def _read(store: Store, name: str) -> tuple[bytes, Record]:
    """An object's bytes and its checksum record."""
    opened = store.objects.stream(store.key(name), etag=None)
    record = store.read_record(name)
    assert opened is not None and record is not None
    return b"".join(bytes(c) for c in opened[1]), record


def _put_as(store: Store, victim: str, got: tuple[bytes, Record]) -> None:
    """``victim`` made of another object's bytes, its record forged to match (what a writer of
    the bucket without the key can do)."""
    data, record = got
    store.objects.put(store.key(victim), data)
    meta = store.objects.head(store.key(victim))
    assert meta is not None
    forged = dataclasses.replace(record, name=victim, etag=meta.etag)
    store.objects.put(store.record_key(victim), forged.to_json())


def test_two_databases_manifests_swapped_offsite_are_refused(tmp_path: Path, place: Place) -> None:
    """The `user` and `audit` manifest objects of one backup swapped in the bucket, each
    database's packs copied into the other's, every record forged to match (outside attack,
    issue 16): `verify --offsite NAME` fails naming the manifest object and the swap, and
    `restore NAME --from-offsite` changes no live database. Before, both said ok and the
    restore wrote each database's data into the other."""
    section, environ, store = place
    dbs = {
        "user": make_db(tmp_path / "data" / "user.db", wal=True, rows=300, tag="user"),
        "audit": make_db(tmp_path / "data" / "audit.db", wal=False, rows=100, tag="audit"),
    }
    site = incremental_site(tmp_path, dbs, offsite=section, environ=environ)
    name = jobs.run_backup(site.rt, policy="hourly").name
    assert site.uploader.sync() == 1
    packs = confirmed_packs(store)
    for db, other in (("user", "audit"), ("audit", "user")):
        for pack in (p.split("/")[1] for p in packs if p.startswith(f"{db}/")):
            donor = _read(store, pack_object(db, pack, encrypted=False))
            _put_as(store, pack_object(other, pack, encrypted=False), donor)
    user_m = manifest_object("user", name, encrypted=False)
    audit_m = manifest_object("audit", name, encrypted=False)
    user_got, audit_got = _read(store, user_m), _read(store, audit_m)
    _put_as(store, user_m, audit_got)
    _put_as(store, audit_m, user_got)
    env = clean_env(**environ)
    bad = run_cli("verify", "--offsite", name, config=site.config, env=env)
    assert bad.returncode == 1
    assert "moved or swapped" in bad.stderr and "/manifests/" in bad.stderr, bad.stderr
    before = {db: path.read_bytes() for db, path in dbs.items()}
    shutil.rmtree(site.rt.backup_dir / "pages")  # nothing local to use: all from the bucket
    restore = run_cli("restore", name, "--from-offsite", "--force", config=site.config, env=env)
    assert restore.returncode == 1, restore.stdout
    assert "moved or swapped" in restore.stderr, restore.stderr
    assert {db: path.read_bytes() for db, path in dbs.items()} == before
