"""Incremental backups restored from offsite (issue 16): a host backs up two databases with an
incremental policy and uploads the page stores age-encrypted; the host is lost (databases and
backup directory gone); with only the configuration, the identity file and the store,
`restore NAME --from-offsite --force` brings back that backup (s3 and file://)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from pyrage import x25519

from backup_sidecar import jobs
from backup_sidecar.offsite.pagekeys import pack_object
from support.cli import clean_env, one_error_line, run_cli
from support.databases import Writer, dump, integrity, make_db
from support.offsite_pages import Place, Site, confirmed_packs, incremental_site, offsite_place


@pytest.fixture
def place(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Place:
    return offsite_place(backend, tmp_path, request)


def _write(db: Path, tag: str, rows: int) -> None:
    conn = sqlite3.connect(db)
    conn.executemany("INSERT INTO items(body) VALUES (?)", [(f"{tag}-{i}",) for i in range(rows)])
    conn.execute("UPDATE items SET body = body || '+' WHERE id % 7 = 0")
    conn.commit()
    conn.close()


def _host(tmp_path: Path, place: Place) -> tuple[Site, dict[str, Path], Path]:
    section, environ, _ = place
    identity = x25519.Identity.generate()
    key = tmp_path / "kept" / "age.txt"
    key.parent.mkdir()
    key.write_text(f"{identity}\n")
    key.chmod(0o600)
    encryption = {"recipients": [str(identity.to_public())], "identity_file": str(key)}
    dbs = {
        "user": make_db(tmp_path / "data" / "user.db", wal=True, rows=400),
        "audit": make_db(tmp_path / "data" / "audit.db", wal=False, rows=150),
    }
    site = incremental_site(
        tmp_path, dbs, offsite={**section, "encryption": encryption}, environ=environ
    )
    return site, dbs, key


def test_a_lost_host_restores_an_incremental_backup_from_offsite(
    tmp_path: Path, place: Place
) -> None:
    """Three backups of a chain (a writer committing during the first), uploaded; the host
    lost. `restore <the second> --from-offsite --force` on the empty host: both databases
    equal their state at that backup (dumps), integrity ok; the backup is now in the local
    page stores (`list` shows it) and restores again locally without the store. Then
    `restore --latest --from-offsite` takes the newest incremental backup for both."""
    site, dbs, _ = _host(tmp_path, place)
    _, environ, _ = place
    writer = Writer.start(dbs["user"], rate=200)
    try:
        jobs.run_backup(site.rt, policy="hourly")
    finally:
        writer.stop()
    _write(dbs["user"], "second", 300)
    _write(dbs["audit"], "second", 50)
    second = jobs.run_backup(site.rt, policy="hourly").name
    wanted = {name: dump(path) for name, path in dbs.items()}
    _write(dbs["user"], "third", 200)
    third = jobs.run_backup(site.rt, policy="hourly").name
    newest = {name: dump(path) for name, path in dbs.items()}
    assert site.uploader.sync() == 3

    shutil.rmtree(tmp_path / "data")
    shutil.rmtree(tmp_path / "backups")
    env = clean_env(**environ)
    config = site.config
    done = run_cli("restore", second, "--from-offsite", "--force", config=config, env=env)
    assert done.returncode == 0, done.stderr
    for name, path in dbs.items():
        assert dump(path) == wanted[name]
        assert integrity(path) == "ok"
    listed = run_cli("list", "--json", config=config, env=env)
    assert second in listed.stdout
    _write(dbs["user"], "later", 10)
    again = run_cli("restore", second, "--force", config=config, env=env)  # local now
    assert again.returncode == 0, again.stderr
    assert dump(dbs["user"]) == wanted["user"]
    # --latest: each database from the newest confirmed copy, here the third incremental
    # (its packs the second already brought are linked from the local store, not downloaded)
    latest = run_cli(
        "restore", "--latest", "--from-offsite", "--force", "--json", config=config, env=env
    )
    assert latest.returncode == 0, latest.stderr
    assert json.loads(latest.stdout)["databases"] == {"audit": third, "user": third}
    for name, path in dbs.items():
        assert dump(path) == newest[name]
        assert integrity(path) == "ok"


def test_a_damaged_pack_offsite_fails_the_fetch_and_leaves_nothing(
    tmp_path: Path, place: Place
) -> None:
    """A pack object offsite replaced by other bytes (with a record saying so: it is still
    confirmed): the fetch rebuilds in staging, the pages do not hash to their slots, and the
    restore fails with one line naming the backup's manifest object; no page store file and
    no database is written."""
    site, dbs, _ = _host(tmp_path, place)
    _, environ, store = place
    name = jobs.run_backup(site.rt, policy="hourly").name
    assert site.uploader.sync() == 1
    shutil.rmtree(tmp_path / "data")
    shutil.rmtree(tmp_path / "backups")
    # Another pack's object and record copied over one of user's: every check of the object
    # against its record passes; only its content is wrong.
    packs = sorted(p.split("/")[1] for p in confirmed_packs(store) if p.startswith("user/"))
    audit = sorted(p.split("/")[1] for p in confirmed_packs(store) if p.startswith("audit/"))
    victim = pack_object("user", packs[0], encrypted=True)
    donor = pack_object("audit", audit[0], encrypted=True)
    opened = store.objects.stream(store.key(donor), etag=None)
    assert opened is not None
    body = b"".join(bytes(c) for c in opened[1])
    store.objects.put(store.key(victim), body)
    record = store.read_record(donor)
    assert record is not None
    meta = store.objects.head(store.key(victim))
    assert meta is not None
    forged = dataclasses.replace(record, name=victim, etag=meta.etag)
    store.objects.put(store.record_key(victim), forged.to_json())
    assert store.confirm(victim).confirmed
    config = site.config
    env = clean_env(**environ)
    failed = run_cli("restore", name, "--from-offsite", "--force", config=config, env=env)
    assert failed.returncode != 0
    line = one_error_line(failed)
    assert f"pages/user/manifests/{name}.json.age" in line, line
    assert not any((tmp_path / "backups" / "pages").rglob("*.json"))
    assert not any((tmp_path / "backups" / "pages").rglob("*.pack"))
    assert not dbs["user"].exists()
