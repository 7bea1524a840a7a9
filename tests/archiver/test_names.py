"""Archive names: claimed once, never overwritten, and default names never fail a backup.
Member names: a file name an archive can hold backs up and restores; the rest is refused at load.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from backup_sidecar.archiver import (
    DatabaseSpec,
    clean_leftovers,
    clean_restore_leftovers,
    create_backup,
)
from backup_sidecar.archiver import manifest as mf
from backup_sidecar.archiver.staging import reserve_name
from backup_sidecar.errors import (
    ArchiveExistsError,
    ManifestError,
    MemberNameError,
    MetadataRefusedError,
)
from support.archives import gnu_tar_names
from support.databases import Writer, make_db

NOW = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)


def test_concurrent_default_names_all_get_distinct_archives(backup_dir: Path, wal_db: Path) -> None:
    """Eight backups started at the same wall-clock second with the same default name (as
    after a clock step back, or queued behind a restore) all succeed as distinct archives."""
    spec = DatabaseSpec("user", wal_db)
    with ThreadPoolExecutor(8) as pool:
        infos = list(
            pool.map(
                lambda _: create_backup(
                    [spec], backup_dir=backup_dir, name="daily_20261128_030000",
                    policy="daily", now=NOW, unique=True,
                ),
                range(8),
            )
        )  # fmt: skip
    names = sorted(i.name for i in infos)
    assert len(set(names)) == 8
    assert "daily_20261128_030000" in names
    assert sorted(p.name for p in backup_dir.glob("*.tar.gz")) == sorted(
        f"{n}.tar.gz" for n in names
    )


def test_explicit_name_has_exactly_one_winner(backup_dir: Path, wal_db: Path) -> None:
    """Of several backups racing for one explicit name, exactly one publishes it; the others
    raise ArchiveExistsError and leave the winner's bytes alone."""
    spec = DatabaseSpec("user", wal_db)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt(_: int) -> None:
        try:
            create_backup([spec], backup_dir=backup_dir, name="same", policy="manual", now=NOW)
            result = "ok"
        except ArchiveExistsError:
            result = "exists"
        with lock:
            outcomes.append(result)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(attempt, range(6)))
    assert outcomes.count("ok") == 1
    assert outcomes.count("exists") == 5
    assert [p.name for p in backup_dir.glob("*.tar.gz")] == ["same.tar.gz"]


def test_a_held_reservation_keeps_the_name_and_survives_cleanup(backup_dir: Path) -> None:
    """While one writer holds a name's reservation, another asking for it exactly is refused
    and a non-exact one gets the next suffix; start-up cleanup does not remove the live
    reservation, and the name is free again once released."""
    with reserve_name(backup_dir, "nightly", exact=True) as first:
        assert first == "nightly"
        with pytest.raises(ArchiveExistsError), reserve_name(backup_dir, "nightly", exact=True):
            pass
        with reserve_name(backup_dir, "nightly", exact=False) as second:
            assert second == "nightly-2"
        assert clean_leftovers(backup_dir) == []
        assert (backup_dir / ".staging" / "nightly.name").exists()
    assert not (backup_dir / ".staging" / "nightly.name").exists()
    with reserve_name(backup_dir, "nightly", exact=True) as again:
        assert again == "nightly"


def test_a_dead_writers_reservation_is_cleaned(backup_dir: Path) -> None:
    """A reservation file nobody holds (its process died) is removed by the cleanup."""
    staging = backup_dir / ".staging"
    staging.mkdir()
    orphan = staging / "daily_20261128_030000.name"
    orphan.touch()
    assert clean_leftovers(backup_dir) == [orphan]
    assert not orphan.exists()


# --- Database file names as archive members ---------------------------------------------------

#: File names a filesystem allows and an archive can hold: spaces, accents, CJK, glob and shell
#: characters, a leading dash, and the longest allowed name (200 UTF-8 bytes).
ODD_FILE_NAMES = (
    "my data.db",
    "données.db",
    "日本.db",
    "data[1]*.db",
    "-rf it's.db",
    "é" * 98 + ".db",
)


def _cli_config(tmp_path: Path, backup_dir: Path, databases: dict[str, dict[str, str]]) -> Path:
    cfg = tmp_path / "sidecar.yaml"
    cfg.write_text(yaml.safe_dump({"backup_dir": str(backup_dir), "databases": databases}))
    return cfg


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_DATABASE_PATH")}
    env = {k: v for k, v in env.items() if not k.startswith("SIDECAR_") and k != "BACKUP_DIR"}
    return subprocess.run(
        [sys.executable, "-m", "backup_sidecar", "--config", str(config), "--log-format", "json",
         *args],
        env=env, capture_output=True, text=True, timeout=300, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _rows(db: Path, table: str) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def test_odd_database_file_names_back_up_list_verify_and_restore(
    tmp_path: Path, backup_dir: Path, writer_process: Callable[..., Writer]
) -> None:
    """Databases named with a space, accents, CJK, glob characters and 200 bytes of UTF-8 (WAL
    and rollback, one written by a live writer meanwhile) back up through the CLI into an archive
    that `list` calls verified, GNU tar lists under exactly those names, `verify` passes, and
    `restore` puts back in place of newer content. (Before, the backup failed after publishing
    an archive that every reader called damaged.)"""
    live = tmp_path / "live"
    live.mkdir()
    dbs = {f"db{i}": make_db(live / n, wal=i % 2 == 0) for i, n in enumerate(ODD_FILE_NAMES)}
    config = _cli_config(tmp_path, backup_dir, {k: {"path": str(p)} for k, p in dbs.items()})
    writer = writer_process(dbs["db0"], rate=100)
    done = _cli(config, "backup", "--json")
    writer.stop()
    assert done.returncode == 0, done.stderr
    archive = Path(json.loads(done.stdout)["path"])
    name = archive.name.removesuffix(".tar.gz")

    listed = json.loads(_cli(config, "list", "--json").stdout)
    assert [(a["name"], a["status"], a["error"]) for a in listed] == [(name, "verified", None)]
    assert gnu_tar_names(archive) == ["backup_metadata.json", *ODD_FILE_NAMES]
    meta = subprocess.run(
        ["tar", "-xzOf", str(archive), "backup_metadata.json"], capture_output=True, check=True
    )
    counts = {db: e["row_counts"] for db, e in json.loads(meta.stdout)["databases"].items()}
    verified = _cli(config, "verify", name, "--json")
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["databases"] == list(dbs)

    for path in dbs.values():
        conn = sqlite3.connect(path)
        conn.execute("DELETE FROM items")
        conn.commit()
        conn.close()
    restored = _cli(config, "restore", name, "--force", "--json")
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["restored"] == list(dbs)
    for db, path in dbs.items():
        assert _rows(path, "items") == counts[db]["items"] == 100
    assert _rows(dbs["db0"], "ticks") == counts["db0"]["ticks"] > 0


@pytest.mark.parametrize(
    ("file_name", "reason"),
    [
        ("back\\slash.db", "contains '\\'"),
        ("new\nline.db", "control character"),
        ("backup_metadata.json", "metadata member"),
        ("é" * 99 + ".db", "201 bytes long"),
    ],
)
def test_config_check_refuses_file_names_an_archive_cannot_hold(
    tmp_path: Path, backup_dir: Path, file_name: str, reason: str
) -> None:
    """A database file name that no archive can hold is refused by `config check` and by the
    daemon's start (exit 2, one line naming the key and why), never at the first backup."""
    db = make_db(tmp_path / file_name, wal=True)
    config = _cli_config(tmp_path, backup_dir, {"odd": {"path": str(db)}})
    for args in (("config", "check", str(config)), ("run",)):
        done = _cli(config, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "databases.odd.path" in done.stderr
        assert reason in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert list(backup_dir.iterdir()) == []


def test_config_check_refuses_a_file_name_that_is_not_utf8(
    tmp_path: Path, backup_dir: Path
) -> None:
    """A path from the environment whose file name is not UTF-8 (bytes 0xff) is refused at
    load naming the variable; the tar and JSON of an archive could not carry it unchanged."""
    raw = os.fsdecode(bytes(tmp_path) + b"/caf\xff.db")
    make_db(Path(raw), wal=False)
    config = _cli_config(tmp_path, backup_dir, {"odd": {}})
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env |= {"ODD_DATABASE_PATH": raw, "SIDECAR_CONFIG": str(config)}
    done = subprocess.run(
        [sys.executable, "-m", "backup_sidecar", "config", "check", str(config)],
        env=env, capture_output=True, text=True, check=False, errors="replace",
    )  # fmt: skip
    assert done.returncode == 2, done.stdout
    assert "environment ODD_DATABASE_PATH: databases.odd.path" in done.stderr
    assert "not valid UTF-8" in done.stderr


def test_two_databases_with_one_file_name_are_refused_naming_both_keys(
    tmp_path: Path, backup_dir: Path
) -> None:
    """Two databases called `data.db` in two directories are refused at load naming both keys
    and both paths (before: every backup failed with a misleading "File exists"); with
    `member:` set for one of them they back up and restore under distinct member names."""
    (tmp_path / "a").mkdir()
    first = make_db(tmp_path / "a" / "data.db", wal=True)
    (tmp_path / "b").mkdir()
    second = make_db(tmp_path / "b" / "data.db", wal=False, rows=7)
    dbs = {"one": {"path": str(first)}, "two": {"path": str(second)}}
    config = _cli_config(tmp_path, backup_dir, dbs)
    done = _cli(config, "config", "check", str(config))
    assert done.returncode == 2
    assert "databases.one and databases.two" in done.stderr
    assert str(first) in done.stderr and str(second) in done.stderr
    assert "databases.two.member" in done.stderr

    bad = _cli_config(tmp_path, backup_dir, {"one": {"path": str(first), "member": "a/b.db"}})
    refused = _cli(bad, "config", "check", str(bad))
    assert refused.returncode == 2
    assert "databases.one.member" in refused.stderr

    dbs["two"]["member"] = "data-two.db"
    config = _cli_config(tmp_path, backup_dir, dbs)
    made = _cli(config, "backup", "--json")
    assert made.returncode == 0, made.stderr
    archive = json.loads(made.stdout)["path"]
    assert gnu_tar_names(Path(archive)) == ["backup_metadata.json", "data.db", "data-two.db"]
    second.unlink()
    restored = _cli(config, "restore", Path(archive).name, "--force", "--db", "two")
    assert restored.returncode == 0, restored.stderr
    assert _rows(second, "items") == 7
    assert _rows(first, "items") == 100


def test_a_backup_whose_metadata_would_not_verify_publishes_nothing(
    backup_dir: Path, wal_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The metadata is read back as verify reads it BEFORE the archive is published: a refusal
    there (injected) fails the backup with a SidecarError naming it and leaves no archive, no
    staging directory and no reservation behind. (Before, it raised after publishing.)"""

    def refuse(data: bytes) -> mf.Manifest:
        raise ManifestError("key 'databases.user.file': injected refusal")

    monkeypatch.setattr(mf, "parse_metadata", refuse)
    with pytest.raises(MetadataRefusedError, match=r"not published.*injected refusal"):
        create_backup(
            [DatabaseSpec("user", wal_db)], backup_dir=backup_dir, name="never",
            policy="manual", now=NOW,
        )  # fmt: skip
    assert list(backup_dir.glob("*.tar.gz")) == []
    assert list((backup_dir / ".staging").iterdir()) == []


def test_member_names_are_refused_before_any_work(backup_dir: Path, wal_db: Path) -> None:
    """Called directly, the archiver refuses a member name no reader would accept, and two
    databases with one member name, before it snapshots anything."""
    with pytest.raises(MemberNameError, match="control character"):
        create_backup(
            [DatabaseSpec("user", wal_db, member="a\tb.db")], backup_dir=backup_dir,
            name="x", policy="manual", now=NOW,
        )  # fmt: skip
    with pytest.raises(MemberNameError, match="also the member name of database 'user'"):
        create_backup(
            [DatabaseSpec("user", wal_db), DatabaseSpec("other", wal_db, member="user_data.db")],
            backup_dir=backup_dir, name="x", policy="manual", now=NOW,
        )  # fmt: skip
    assert list(backup_dir.iterdir()) == []


def test_a_dead_restores_leftover_is_found_whatever_the_file_name(tmp_path: Path) -> None:
    """The half-written new database of a dead restore (`.<file>.restore-<pid>`) is removed for
    a file name holding glob characters, and another database's leftover that the unescaped
    pattern would have matched is left alone. (Before, `data[1]*.db` was used as a pattern.)"""
    dead = 99_999_999  # above any pid_max: no such process
    mine = tmp_path / f".data[1]*.db.restore-{dead}"
    other = tmp_path / f".data1x.db.restore-{dead}"
    mine.touch()
    other.touch()
    spec = DatabaseSpec("odd", tmp_path / "data[1]*.db")
    assert clean_restore_leftovers([spec]) == [mine]
    assert not mine.exists()
    assert other.exists()
