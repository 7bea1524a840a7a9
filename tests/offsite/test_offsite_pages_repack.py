"""A local repack (pagestore/repack.py) rewrites the manifests of backups already confirmed
offsite: their offsite copies stay confirmed copies of the same backups (the manifest records
the SHA-256 of the bytes it replaced), nothing is sent again, no `offsite_source_mismatch`,
and each copy still verifies from the store alone."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from structlog.testing import capture_logs

from backup_sidecar import jobs
from backup_sidecar.jobs.offsite_pageverify import check_page_copy, find_page_copy
from backup_sidecar.offsite.pagekeys import list_pages, parse_page_name
from support.cli import clean_env, run_cli
from support.databases import dump, make_db
from support.offsite_pages import confirmed_packs, incremental_site, offsite_place
from support.pages import pack_files


def _hot_db(path: Path) -> Path:
    db = make_db(path, wal=False, rows=3000)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("CREATE TABLE hot (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        conn.executemany("INSERT INTO hot(v) VALUES (?)", [("x" * 300,)] * 400)
    conn.close()
    return db


def _change(db: Path, i: int) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE hot SET v = ? || substr(v, 4)", (f"{i:03d}",))
        conn.execute("UPDATE items SET body = body || 'x' WHERE id % 400 = ?", (i * 37,))
    conn.close()


def test_a_repack_keeps_confirmed_offsite_copies_confirmed(tmp_path: Path) -> None:
    """Eight backups of a keep-2 incremental policy; the upload pass confirms the two newest
    (h6, h7). The prune repacks their mostly-dead packs and rewrites both manifests locally.
    The next pass sends nothing, logs no `offsite_source_mismatch`, leaves nothing pending,
    keeps the offsite manifests as they were (and every pack they name confirmed, also after
    the pass's offsite prune), and each copy rebuilds and checks from the store alone.
    (Without `replaces`, both backups turned pending for ever: a manifest whose bytes differ
    from its record's source is never overwritten.)"""
    section, environ, store = offsite_place("file", tmp_path)
    db = _hot_db(tmp_path / "data" / "user_data.db")
    site = incremental_site(tmp_path, {"user": db}, offsite=section, environ=environ, keep=2)
    for i in range(8):
        _change(db, i)
        jobs.run_backup(site.rt, policy="hourly", archive_name=f"h{i}")
    with capture_logs():
        assert site.uploader.sync() == 2
    offsite_root = tmp_path / "offsite" / "pages" / "user" / "manifests"
    uploaded = {p.name: p.read_bytes() for p in offsite_root.glob("*.json")}
    assert sorted(uploaded) == ["h6.json", "h7.json"]
    local = tmp_path / "backups" / "pages" / "user"
    packs_before = pack_files(local)

    with capture_logs() as logs:
        jobs.run_prune(site.rt, policies=["hourly"])
    repacked = [e for e in logs if e["event"] == "page_repack_completed"]
    assert len(repacked) == 1 and repacked[0]["manifests_rewritten"] == 2, logs
    assert pack_files(local) != packs_before
    for name, data in uploaded.items():
        assert (local / "manifests" / name).read_bytes() != data

    with capture_logs() as logs:
        assert site.uploader.sync() == 0
    assert not [e for e in logs if e["event"] == "offsite_source_mismatch"], logs
    assert site.metric("backup_sidecar_offsite_pending_archives") == 0
    assert {p.name: p.read_bytes() for p in offsite_root.glob("*.json")} == uploaded
    needed = set()
    for obj in list_pages(store, encrypted_only=False).objects:
        parsed = parse_page_name(obj.name)
        if parsed is not None and parsed.backup is not None:
            assert obj.record is not None and obj.record.origin is not None
            needed |= {f"user/{p}" for p in obj.record.origin.packs}
    assert needed and needed <= confirmed_packs(store)
    for name in ("h6", "h7"):
        found = find_page_copy(store, name, encrypted_only=False)
        assert check_page_copy(store, found, identity_file=None, encrypted_only=False) == ("user",)


def test_a_repacked_backup_restores_from_offsite_by_name_latest_and_init(tmp_path: Path) -> None:
    """The same repack, then the disaster recovery (outside attack, issue 16): `restore NAME
    --from-offsite`, `restore --latest --from-offsite` and, on a host whose database is gone,
    `init --restore-from-offsite` each restore the newest backup's data, and the local
    manifest, a repack of the copy, gives way to the copy (fetched and checked). Before, each
    refused it: the local manifest "is another backup", though its `replaces` named the
    copy's bytes."""
    section, environ, _store = offsite_place("file", tmp_path)
    db = _hot_db(tmp_path / "data" / "user_data.db")
    site = incremental_site(tmp_path, {"user": db}, offsite=section, environ=environ, keep=2)
    names = []
    for i in range(8):
        _change(db, i)
        names.append(jobs.run_backup(site.rt, policy="hourly").name)  # --latest needs these
    h7, at_h7 = names[-1], dump(db)
    with capture_logs():
        assert site.uploader.sync() == 2
        jobs.run_prune(site.rt, policies=["hourly"])
    local = tmp_path / "backups" / "pages" / "user" / "manifests" / f"{h7}.json"
    offsite_h7 = (tmp_path / "offsite" / "pages" / "user" / "manifests" / f"{h7}.json").read_bytes()
    assert local.read_bytes() != offsite_h7  # repacked
    _change(db, 99)
    env = clean_env(**environ)
    for args in (["restore", h7, "--from-offsite", "--force"],
                 ["restore", "--latest", "--from-offsite", "--force"]):  # fmt: skip
        done = run_cli(*args, config=site.config, env=env)
        assert done.returncode == 0, done.stderr
        assert dump(db) == at_h7
        _change(db, 98)
    assert local.read_bytes() == offsite_h7  # the copy took the repack's place
    for path in db.parent.glob("user_data.db*"):
        path.unlink()
    init = run_cli("init", "--restore-from-offsite", config=site.config, env=env)
    assert init.returncode == 0, init.stderr
    assert dump(db) == at_h7
