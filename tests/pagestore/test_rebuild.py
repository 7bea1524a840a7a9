"""Rebuilding and exporting backups: every page and the whole image checked, nothing partial."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from backup_sidecar import pagestore
from backup_sidecar.errors import (
    ImageMismatchError,
    ManifestFormatError,
    PageBackupNotFoundError,
    PageMismatchError,
)
from support.databases import make_db
from support.pages import backup, pack_files, rebuilt


def _two_backups(tmp_path: Path, store: Path) -> Path:
    db = make_db(tmp_path / "live.db", wal=False, rows=3000)
    backup(db, store, "base")
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE items SET body = 'changed' WHERE id = 10")
    conn.close()
    backup(db, store, "next")
    return db


def test_a_damaged_pack_fails_the_rebuild_naming_backup_and_page(
    tmp_path: Path, store: Path
) -> None:
    """One flipped byte inside a compressed frame: PageMismatchError naming the backup and the
    page, and no output file appears."""
    _two_backups(tmp_path, store)
    (base_pack,) = [p for p in (store / "packs").glob("*.pack") if p.stat().st_size > 10_000]
    data = bytearray(base_pack.read_bytes())
    data[200] ^= 0xFF
    base_pack.write_bytes(bytes(data))
    out = tmp_path / "out.db"
    with pytest.raises(PageMismatchError, match=r"page backup 'next': page \d+: .*damaged") as err:
        pagestore.rebuild(store, "next", out=out)
    assert err.value.backup == "next" and err.value.pgno >= 1
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


def test_a_missing_pack_names_the_page_it_held(tmp_path: Path, store: Path) -> None:
    """A pack deleted behind the store's back: the rebuild says which page's pack is missing."""
    _two_backups(tmp_path, store)
    small = min((store / "packs").glob("*.pack"), key=lambda p: p.stat().st_size)
    small.unlink()
    with pytest.raises(PageMismatchError, match="is missing"):
        pagestore.rebuild(store, "next", out=tmp_path / "out.db")
    rebuilt(store, "base", tmp_path / "ok")  # the base never needed that pack


def test_a_wrong_image_hash_is_refused(tmp_path: Path, store: Path) -> None:
    """A manifest whose image SHA-256 does not match its pages: ImageMismatchError, no file."""
    _two_backups(tmp_path, store)
    path = store / "manifests" / "base.json"
    doc = json.loads(path.read_bytes())
    doc["image_sha256"] = "0" * 64
    path.write_text(json.dumps(doc))
    out = tmp_path / "out.db"
    with pytest.raises(ImageMismatchError, match="page backup 'base'"):
        pagestore.rebuild(store, "base", out=out)
    assert not out.exists()


def test_rebuild_never_overwrites_and_knows_missing_backups(tmp_path: Path, store: Path) -> None:
    """An existing output file is left alone; an unknown backup is PageBackupNotFoundError."""
    _two_backups(tmp_path, store)
    out = tmp_path / "taken.db"
    out.write_bytes(b"mine")
    with pytest.raises(FileExistsError):
        pagestore.rebuild(store, "base", out=out)
    assert out.read_bytes() == b"mine"
    with pytest.raises(PageBackupNotFoundError, match="'nope'"):
        pagestore.rebuild(store, "nope", out=tmp_path / "x.db")


def test_list_reports_a_malformed_manifest_and_lists_the_rest(tmp_path: Path, store: Path) -> None:
    """Hostile manifest bytes become that backup's one-line error; the others still list."""
    _two_backups(tmp_path, store)
    (store / "manifests" / "evil.json").write_bytes(b'{"format": "backup-sidecar-pages", ' * 50)
    (store / "manifests" / "deep.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    items = pagestore.list_backups(store)
    errors = {e.name: e for e in items if isinstance(e, ManifestFormatError)}
    assert sorted(errors) == ["deep", "evil"]
    assert all("\n" not in str(e) for e in errors.values())
    assert sorted(m.name for m in items if isinstance(m, pagestore.Manifest)) == ["base", "next"]


def test_export_is_a_tar_gz_that_gnu_tar_extracts(tmp_path: Path, store: Path) -> None:
    """The export holds the extra members first, then the image; GNU tar lists that order and
    extracts an image whose SHA-256 is the manifest's, and that passes integrity_check."""
    db = _two_backups(tmp_path, store)
    out = tmp_path / "next.tar.gz"
    meta = b'{"backup_name": "next"}'
    extra = [("backup_metadata.json", meta)]
    m = pagestore.export(store, "next", out=out, member="user_data.db", extra_members=extra)
    listing = subprocess.run(["tar", "-tzf", str(out)], capture_output=True, text=True, check=True)
    assert listing.stdout.split() == ["backup_metadata.json", "user_data.db"]
    dest = tmp_path / "extracted"
    dest.mkdir()
    subprocess.run(["tar", "-xzf", str(out), "-C", str(dest)], check=True)
    image = (dest / "user_data.db").read_bytes()
    assert hashlib.sha256(image).hexdigest() == m.image_sha256
    assert image == db.read_bytes()
    assert (dest / "backup_metadata.json").read_bytes() == meta
    conn = sqlite3.connect(dest / "user_data.db")
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()


def test_export_of_a_damaged_backup_leaves_no_archive(tmp_path: Path, store: Path) -> None:
    """A damaged page fails the export and no partial .tar.gz is left behind."""
    _two_backups(tmp_path, store)
    for pack in pack_files(store):
        (store / "packs" / pack).write_bytes(b"\0" * 100)
    out = tmp_path / "bad.tar.gz"
    with pytest.raises(PageMismatchError, match="page backup 'base': page 1:"):
        pagestore.export(store, "base", out=out, member="user_data.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backups", "live.db"]
