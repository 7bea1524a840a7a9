"""Archives in the seed's ORIGINAL format (backup_manager.py) are listed, verified and restored.

The archives are built here from the seed's documented layout (DATABASE_PERSISTENCE docs in
/work/shared/seed): Python's ``tarfile.open(path, "w:gz")`` at its default level, the metadata
member first with only the seed's keys (no ``databases``, no checksums, a naive ISO time), then
``arrow_database.db`` and ``user_data.db`` for the databases included.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import tarfile
from datetime import datetime
from pathlib import Path

import pytest

from backup_sidecar.archiver import list_archives

METADATA = "backup_metadata.json"
SEED_NAME = "archerytools_backup_20250804_163829"


def _make(path: Path, *, rows: int, tag: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    conn.executemany("INSERT INTO items(body) VALUES (?)", [(f"{tag}-{i}",) for i in range(rows)])
    conn.commit()
    conn.close()
    return path


def _dump(db: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def _seed_stats(db: Path) -> dict[str, object]:
    conn = sqlite3.connect(db)
    try:
        tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
    finally:
        conn.close()
    return {"table_count": tables, "file_size_mb": round(db.stat().st_size / (1024 * 1024), 2)}


def write_seed_archive(
    path: Path, *, work: Path, arrow: Path | None, user: Path | None, name: str = SEED_NAME
) -> Path:
    """An archive exactly as the seed's backup_manager.py wrote it."""
    work.mkdir(parents=True, exist_ok=True)
    metadata: dict[str, object] = {
        "backup_name": name,
        "created_at": datetime(2025, 8, 4, 16, 38, 29, 591353).isoformat(),  # naive, as the seed
        "version": "1.0.0",
        "includes": {"arrow_database": arrow is not None, "user_database": user is not None},
    }
    if arrow is not None:
        metadata["arrow_db_stats"] = _seed_stats(arrow)
    if user is not None:
        metadata["user_db_stats"] = _seed_stats(user)
    meta_file = work / METADATA
    meta_file.write_text(json.dumps(metadata, indent=2))
    with tarfile.open(path, "w:gz") as tar:
        tar.add(meta_file, arcname=METADATA)
        if arrow is not None:
            tar.add(arrow, arcname="arrow_database.db")
        if user is not None:
            tar.add(user, arcname="user_data.db")
    return path


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def _is_log_record(line: str) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and "event" in record


@pytest.fixture
def seed_scene(tmp_path: Path, backup_dir: Path, fixtures_dir: Path, sidecar_env):
    """Archived sources (arrow: the 2025-08-14 fixture, user: 40 rows) and live databases with
    other content (arrow: the 2025-08-13 fixture, user: 10 rows)."""
    src_arrow = tmp_path / "source" / "arrow_database.db"
    src_arrow.parent.mkdir()
    shutil.copyfile(fixtures_dir / "arrow_database_2025-08-14.db", src_arrow)
    src_user = _make(tmp_path / "source" / "user_data.db", rows=40, tag="seed")
    live_arrow = tmp_path / "live" / "arrow_database.db"
    live_arrow.parent.mkdir()
    shutil.copyfile(fixtures_dir / "arrow_database_2025-08-13.db", live_arrow)
    live_user = _make(tmp_path / "live" / "user_data.db", rows=10, tag="live")
    return {
        "sidecar": sidecar_env(arrow=live_arrow, user=live_user),
        "source": {"arrow": src_arrow, "user": src_user},
        "live": {"arrow": live_arrow, "user": live_user},
        "work": tmp_path / "seed_work",
        "backup_dir": backup_dir,
    }


def test_seed_archive_layout_is_what_the_seed_documents(seed_scene) -> None:
    """Guard of the test's own premise: the built archive lists the metadata first with GNU tar
    and its metadata has the seed's keys only (no `databases`, no checksums)."""
    src = seed_scene["source"]
    archive = write_seed_archive(
        seed_scene["backup_dir"] / f"{SEED_NAME}.tar.gz",
        work=seed_scene["work"],
        arrow=src["arrow"],
        user=src["user"],
    )
    listing = subprocess.run(
        ["tar", "-tzf", str(archive)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert listing == [METADATA, "arrow_database.db", "user_data.db"]
    with tarfile.open(archive) as tar:
        member = tar.extractfile(METADATA)
        assert member is not None
        meta = json.loads(member.read())
    assert set(meta) == {
        "backup_name",
        "created_at",
        "version",
        "includes",
        "arrow_db_stats",
        "user_db_stats",
    }
    assert datetime.fromisoformat(meta["created_at"]).tzinfo is None


def test_seed_archive_is_listed_verified_and_restored(seed_scene) -> None:
    """A full seed archive is listed as legacy with both databases, verifies with a warning on
    stderr about the missing checksums, and `restore --force` puts both databases' content into
    the live files (with a pre_restore archive of the old content)."""
    sidecar, src, live = seed_scene["sidecar"], seed_scene["source"], seed_scene["live"]
    write_seed_archive(
        seed_scene["backup_dir"] / f"{SEED_NAME}.tar.gz",
        work=seed_scene["work"],
        arrow=src["arrow"],
        user=src["user"],
    )
    (listed,) = json.loads(_ok(sidecar.run("list", "--json")).stdout)
    assert listed["name"] == SEED_NAME
    assert listed["status"] == "legacy"
    assert sorted(listed["databases"]) == ["arrow", "user"]
    assert datetime.fromisoformat(listed["created_at"]).replace(tzinfo=None) == datetime(
        2025, 8, 4, 16, 38, 29, 591353
    )

    verified = _ok(sidecar.run("verify", SEED_NAME))
    warnings = [
        ln for ln in verified.stderr.splitlines() if not _is_log_record(ln) and "warning" in ln
    ]
    assert warnings, verified.stderr
    assert "checksum" in warnings[0]

    old = {name: _dump(path) for name, path in live.items()}
    _ok(sidecar.run("restore", SEED_NAME, "--force"))
    for name in ("arrow", "user"):
        assert _dump(live[name]) == _dump(src[name]), name
    pre = [a for a in list_archives(sidecar.backup_dir) if a.policy == "pre_restore"]
    assert len(pre) == 1
    assert sorted(pre[0].databases) == ["arrow", "user"]
    assert old["user"] != _dump(live["user"])


def test_seed_user_only_archive_restores_only_the_user_database(seed_scene) -> None:
    """A seed archive holding only the user database (includes.arrow_database false) is listed
    with that one database, verifies, and a plain `restore --force` replaces the user database
    and leaves the arrow database byte-identical."""
    sidecar, src, live = seed_scene["sidecar"], seed_scene["source"], seed_scene["live"]
    name = "user_data_only_20250804_140000"
    write_seed_archive(
        seed_scene["backup_dir"] / f"{name}.tar.gz",
        work=seed_scene["work"],
        arrow=None,
        user=src["user"],
        name=name,
    )
    (listed,) = json.loads(_ok(sidecar.run("list", "--json")).stdout)
    assert listed["status"] == "legacy"
    assert listed["databases"] == ["user"]
    _ok(sidecar.run("verify", name))
    arrow_bytes = live["arrow"].read_bytes()
    _ok(sidecar.run("restore", name, "--force"))
    assert _dump(live["user"]) == _dump(src["user"])
    assert live["arrow"].read_bytes() == arrow_bytes


def _seed_copy_of_wal_database(path: Path, *, rows: int) -> Path:
    """What the seed archived for a WAL database: a backup-API copy, whose header says WAL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    live = path.with_name("wal_source.db")
    conn = sqlite3.connect(live)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    conn.executemany("INSERT INTO items(body) VALUES (?)", [(f"wal-{i}",) for i in range(rows)])
    conn.commit()
    copy = sqlite3.connect(path)
    conn.backup(copy)
    copy.close()
    conn.close()
    assert path.read_bytes()[18:20] == b"\x02\x02"  # file format versions 2: WAL
    return path


def test_seed_member_from_a_wal_database_keeps_the_live_journal_mode(seed_scene) -> None:
    """Restoring a seed archive made from a WAL database into a rollback-journal live database
    replaces the content but keeps the live database's journal mode (the application chose it;
    WAL is unsafe on some volumes, e.g. network file systems)."""
    sidecar, live = seed_scene["sidecar"], seed_scene["live"]
    member = _seed_copy_of_wal_database(seed_scene["work"] / "copy" / "user_data.db", rows=25)
    name = "user_data_only_wal_20250804_140000"
    write_seed_archive(
        seed_scene["backup_dir"] / f"{name}.tar.gz",
        work=seed_scene["work"],
        arrow=None,
        user=member,
        name=name,
    )
    conn = sqlite3.connect(live["user"])
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()
    _ok(sidecar.run("restore", name, "--force"))
    conn = sqlite3.connect(live["user"])
    try:
        assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == 25
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        conn.close()
