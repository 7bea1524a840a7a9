"""The writer and the readers agree on every limit: a backup never publishes what verify refuses.

Real databases with many tables (their row counts make the metadata large), built fast
(support/widedb.py: the file `CREATE TABLE` makes, checked against it here); the limits are
the real defaults (``Limits``), shared by create_backup, verify, list and restore.
"""

from __future__ import annotations

import json
import sqlite3
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backup_sidecar.archiver import (
    DatabaseSpec,
    Limits,
    create_backup,
    list_archives,
    staging_area,
    verify_archive,
)
from backup_sidecar.archiver.model import DEFAULT_LIMITS, MAX_METADATA_BYTES
from backup_sidecar.errors import ArchiveTooLargeError, CorruptArchiveError
from support.cli import Sidecar
from support.databases import make_db
from support.widedb import COLUMNS, many_tables, table_names

NOW = datetime(2026, 1, 1, tzinfo=UTC)
METADATA = "backup_metadata.json"


def created_tables(path: Path, *, tables: int, name_length: int) -> Path:
    """`many_tables` the slow way, by `CREATE TABLE` in one transaction (SQLite rescans its
    schema at each one: 14,000 tables take 15-25 s of CPU): the reference for the fast build."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = table_names(tables, name_length)
    script = "".join(f'CREATE TABLE "{name}" {COLUMNS};' for name in names)
    rows = "".join(f"INSERT INTO \"{n}\" (v) VALUES ('row of {n[:7]}');" for n in names[::10])
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA page_size=1024")
    conn.executescript(f"BEGIN;{script}{rows}COMMIT;")
    conn.close()
    return path


def _shape(path: Path) -> tuple[list[str], int, int, str]:
    conn = sqlite3.connect(path)
    try:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        return list(conn.iterdump()), pages, free, check
    finally:
        conn.close()


@pytest.mark.parametrize("name_length", [64, 3000])
def test_the_fast_build_is_what_create_table_makes(tmp_path: Path, name_length: int) -> None:
    """Guard for support/widedb.py: its database of 300 tables (short names, and names that
    overflow sqlite_master's pages) dumps to the same SQL, with the same page count, no free
    page and a clean integrity_check, as the one `CREATE TABLE` makes."""
    fast = many_tables(tmp_path / "fast.db", tables=300, name_length=name_length)
    slow = created_tables(tmp_path / "slow.db", tables=300, name_length=name_length)
    assert _shape(fast) == _shape(slow)
    assert _shape(fast)[1:] == (_shape(fast)[1], 0, "ok")


@pytest.fixture(scope="module")
def wide_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """14,000 tables with 64-character names: metadata over the old 1 MiB limit."""
    return many_tables(
        tmp_path_factory.mktemp("wide") / "user_data.db", tables=14_000, name_length=64
    )


def _staging_empty(backup_dir: Path) -> bool:
    staging = backup_dir / ".staging"
    return not staging.exists() or not any(staging.iterdir())


def test_one_limit_for_the_writer_and_the_readers() -> None:
    """Guard: the readers' default metadata limit is the constant the writer checks against."""
    assert DEFAULT_LIMITS.max_metadata_bytes == MAX_METADATA_BYTES == 16 << 20


@pytest.mark.slow
def test_backup_of_14000_tables_verifies_lists_and_restores(
    wide_db: Path, sidecar_env: Callable[..., Sidecar], tmp_path: Path
) -> None:
    """A database of 14,000 tables (64-character names) makes metadata over 1 MiB: the backup
    succeeds, lists as verified, verifies, and restores (the real CLI, each step exit 0)."""
    (tmp_path / "live").mkdir()
    live = make_db(tmp_path / "live" / "user_data.db", wal=False, rows=5)
    sidecar = sidecar_env(user=wide_db)
    backup = sidecar.run("backup", "--db", "user", "--name", "wide", "--json")
    assert backup.returncode == 0, backup.stderr
    archive = sidecar.backup_dir / "wide.tar.gz"
    with tarfile.open(archive) as tar:
        size = tar.getmember(METADATA).size
    assert size > 1 << 20  # the old limit, which this archive broke
    (listed,) = list_archives(sidecar.backup_dir)
    assert (listed.status.value, listed.error) == ("verified", None)

    restorer = sidecar_env(user=live)
    verified = restorer.run("verify", "wide")
    assert verified.returncode == 0, verified.stderr
    restored = restorer.run("restore", "wide", "--force")
    assert restored.returncode == 0, restored.stderr
    conn = sqlite3.connect(live)
    try:
        count = conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()
        assert count[0] == 14_000
    finally:
        conn.close()


def test_backup_whose_metadata_is_over_the_limit_is_refused(tmp_path: Path) -> None:
    """A database whose metadata would exceed MAX_METADATA_BYTES (450 tables named with
    20,000 characters: each name is recorded twice with its row count) is refused with
    ArchiveTooLargeError naming the metadata and the limit: no archive, nothing staged left
    behind, the source untouched."""
    source = many_tables(tmp_path / "src" / "user_data.db", tables=450, name_length=20_000)
    before = source.read_bytes()
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    with pytest.raises(ArchiveTooLargeError) as caught:
        create_backup(
            [DatabaseSpec("user", source)],
            backup_dir=backup_dir,
            name="too_wide",
            policy="manual",
            now=NOW,
        )
    message = str(caught.value)
    assert METADATA in message and str(MAX_METADATA_BYTES) in message, message
    assert caught.value.size > MAX_METADATA_BYTES
    assert "\n" not in message
    assert list(backup_dir.glob("*.tar.gz")) == []
    assert _staging_empty(backup_dir)
    assert source.read_bytes() == before


def test_writer_refuses_what_the_reader_limits_refuse(tmp_path: Path) -> None:
    """Under the same (small) limits, create_backup refuses a database whose archive verify
    would refuse: content past max_total_bytes, and metadata past max_metadata_bytes; each
    refusal publishes nothing. The archive the default limits allow is refused by verify under
    the small ones, so the writer's check is the reader's."""
    (tmp_path / "src").mkdir()
    db = make_db(tmp_path / "src" / "user_data.db", wal=False, rows=3000)
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    spec = [DatabaseSpec("user", db)]
    size = db.stat().st_size
    small_total = Limits(max_metadata_bytes=64 << 10, max_total_bytes=size)
    small_meta = Limits(max_metadata_bytes=256)
    for limits, what in ((small_total, "content"), (small_meta, METADATA)):
        with pytest.raises(ArchiveTooLargeError, match=what):
            create_backup(
                spec, backup_dir=backup_dir, name="small", policy="manual", now=NOW, limits=limits
            )
        assert list(backup_dir.glob("*.tar.gz")) == []
        assert _staging_empty(backup_dir)
    info = create_backup(spec, backup_dir=backup_dir, name="small", policy="manual", now=NOW)
    for limits, fault in ((small_total, "limit of"), (small_meta, "too large")):
        with (
            pytest.raises(CorruptArchiveError, match=fault),
            staging_area(backup_dir, purpose="verify") as area,
        ):
            verify_archive(info.path, staging=area, limits=limits)
    with staging_area(backup_dir, purpose="verify") as area:
        verify_archive(info.path, staging=area)
    with tarfile.open(info.path) as tar:
        member = tar.extractfile(METADATA)
        assert member is not None
        assert json.loads(member.read())["user_db_stats"]["tables"] == {"items": 3000}
