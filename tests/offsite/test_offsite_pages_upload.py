"""Incremental backups go offsite (issue 16): each page store's packs and manifests are
uploaded by the daemon's upload job (in process here), age-encrypted, on s3 and file://."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from pyrage import x25519

from backup_sidecar import jobs
from backup_sidecar.jobs.offsite_pages import check_pack
from backup_sidecar.offsite.pagekeys import manifest_object, pack_object
from backup_sidecar.service import offsite_pages as offsite_pages_service
from support.databases import Writer, make_db
from support.metrics import free_port
from support.offsite_pages import (
    Place,
    confirmed_manifests,
    confirmed_packs,
    incremental_site,
    offsite_place,
)
from support.pages import pack_files
from support.waiting import wait_until


@pytest.fixture
def place(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Place:
    return offsite_place(backend, tmp_path, request)


def _touch(db: Path, rows: int) -> None:
    conn = sqlite3.connect(db)
    conn.executemany("INSERT INTO items(body) VALUES (?)", [(f"new-{i}",) for i in range(rows)])
    conn.commit()
    conn.close()


def _local_packs(backup_dir: Path, dbs: dict[str, Path]) -> set[str]:
    """``db/pack`` of every pack in the local page stores."""
    root = backup_dir / "pages"
    return {f"{db}/{p.removesuffix('.pack')}" for db in dbs for p in pack_files(root / db)}


def test_packs_then_manifests_go_offsite_encrypted_each_pack_once(
    tmp_path: Path, place: Place
) -> None:
    """Two databases, an incremental policy, a writer committing meanwhile: a pass uploads
    every pack of both page stores and both manifests as age objects, confirmed, the
    manifest's record naming every pack it needs; the policy's last offsite success is set
    and nothing is pending. A second backup after more writes sends only its new packs (the
    old ones' records are untouched: encrypted again they would differ) and its manifests."""
    section, environ, store = place
    recipient = str(x25519.Identity.generate().to_public())
    dbs = {
        "user": make_db(tmp_path / "data" / "user.db", wal=True, rows=300),
        "audit": make_db(tmp_path / "data" / "audit.db", wal=False, rows=200),
    }
    site = incremental_site(
        tmp_path,
        dbs,
        offsite={**section, "encryption": {"recipients": [recipient]}},
        environ=environ,
    )
    writer = Writer.start(dbs["user"], rate=200)
    try:
        first = jobs.run_backup(site.rt, policy="hourly").name
    finally:
        writer.stop()
    assert site.uploader.sync() == 1
    packs = _local_packs(site.rt.backup_dir, dbs)
    assert confirmed_packs(store) == packs
    assert confirmed_manifests(store) == {f"user/{first}", f"audit/{first}"}
    for db in dbs:
        record = store.read_record(manifest_object(db, first, encrypted=True))
        assert record is not None and record.encrypted and record.origin is not None
        assert record.origin.policy == "hourly"
        assert record.origin.databases == ("audit", "user")
        needs = {f"{db}/{p}" for p in record.origin.packs}
        assert needs == {p for p in packs if p.startswith(f"{db}/")}
    last = site.metric("backup_sidecar_offsite_last_success_timestamp_seconds", policy="hourly")
    assert last is not None and last > 0
    assert site.metric("backup_sidecar_offsite_pending_archives") == 0
    before = {p: store.read_record(pack_object(*p.split("/"), encrypted=True)) for p in packs}

    _touch(dbs["user"], 500)
    second = jobs.run_backup(site.rt, policy="hourly").name
    new = _local_packs(site.rt.backup_dir, dbs) - packs
    assert new, "the second backup wrote new packs"
    assert site.uploader.sync() == 1
    assert confirmed_packs(store) == packs | new
    assert confirmed_manifests(store) == {f"{db}/{n}" for db in dbs for n in (first, second)}
    after = {p: store.read_record(pack_object(*p.split("/"), encrypted=True)) for p in packs}
    assert after == before  # uploaded once: never sent (encrypted anew) again
    assert site.uploader.sync() == 0  # nothing pending


def test_a_backup_counts_offsite_only_with_every_pack_it_needs(
    tmp_path: Path, place: Place
) -> None:
    """A pack of a confirmed backup loses its record (an unfinished or damaged copy): the
    backup is pending again and the next pass sends that pack again (and only it); a listing
    of the archives never shows page store objects."""
    section, environ, store = place
    db = make_db(tmp_path / "data" / "user.db", wal=True, rows=400)
    site = incremental_site(tmp_path, {"user": db}, offsite=section, environ=environ)
    name = jobs.run_backup(site.rt, policy="hourly").name
    assert site.uploader.sync() == 1
    pack = sorted(confirmed_packs(store))[0].split("/")[1]
    obj = pack_object("user", pack, encrypted=False)
    store.objects.delete(store.record_key(obj))
    assert f"user/{pack}" not in confirmed_packs(store)
    sent = site.metric("backup_sidecar_offsite_upload_bytes_total") or 0
    assert site.uploader.sync() == 1
    assert f"user/{pack}" in confirmed_packs(store)
    resent = (site.metric("backup_sidecar_offsite_upload_bytes_total") or 0) - sent
    size = (site.rt.backup_dir / "pages" / "user" / "packs" / f"{pack}.pack").stat().st_size
    manifest = (site.rt.backup_dir / "pages" / "user" / "manifests" / f"{name}.json").stat()
    assert resent == size + manifest.st_size  # that pack and the manifest, nothing else
    assert store.list().objects == ()
    assert store.list().problems == ()


def test_an_incremental_policy_lags_while_the_store_is_unreachable(tmp_path: Path) -> None:
    """`max_age: 1s`, the endpoint dead from the start: the incremental backup is pending on
    what is known (no listing ever answered), so the policy's `offsite_lagging` turns 1 once
    it waited past max_age; a pass that cannot reach the store no longer hides it."""
    db = make_db(tmp_path / "data" / "user.db", wal=True, rows=100)
    dead = {
        "url": "s3://nowhere/prefix",
        "endpoint": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "path_style": True,
        "attempts": 1,
        "max_age": "1s",
    }
    environ = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}
    site = incremental_site(tmp_path, {"user": db}, offsite=dead, environ=environ)
    jobs.run_backup(site.rt, policy="hourly")

    def lagging() -> bool:
        assert site.uploader.sync() == 0
        return site.metric("backup_sidecar_offsite_lagging", policy="hourly") == 1

    wait_until(lagging, what="the incremental policy lagging")
    assert site.metric("backup_sidecar_offsite_pending_archives") == 1


def test_a_pack_whose_bytes_differ_from_those_checked_is_never_confirmed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pack check is made to vouch for other bytes than those the upload reads (the fault:
    a pack rewritten between its check and its upload): no pack and no manifest is confirmed,
    the refusal is counted as `damaged`, and the backup stays pending; with the real check
    the next pass confirms it (file://)."""
    section, environ, store = offsite_place("file", tmp_path)
    db = make_db(tmp_path / "data" / "user.db", wal=True, rows=300)
    site = incremental_site(tmp_path, {"user": db}, offsite=section, environ=environ)
    jobs.run_backup(site.rt, policy="hourly")
    monkeypatch.setattr(offsite_pages_service, "check_pack", lambda *a, **k: "0" * 64)
    assert site.uploader.sync() == 0
    assert confirmed_packs(store) == set() and confirmed_manifests(store) == set()
    assert site.metric("backup_sidecar_offsite_failures_total", reason="damaged") == 1
    assert site.metric("backup_sidecar_offsite_pending_archives") == 1
    monkeypatch.setattr(offsite_pages_service, "check_pack", check_pack)
    assert site.uploader.sync() == 1
    assert confirmed_manifests(store) != set()
