"""`list --offsite` shows incremental backups; `verify --offsite NAME` downloads, rebuilds and
checks one; a pack that no longer rebuilds fails it naming the manifest object (s3, file)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from pyrage import x25519

from backup_sidecar import jobs
from backup_sidecar.offsite.pagekeys import pack_object
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
