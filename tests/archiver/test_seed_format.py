"""Archives written by the seed's ORIGINAL backup_manager.py are listed, verified and restored.

The archives are built here the way the original ``create_backup`` builds them: each database
copied with the backup API into a staging directory, ``_get_db_stats`` of the live file, the
metadata written LAST with ``json.dump(indent=2)``, then ``tarfile.open(path, "w:gz")`` adding
``for f in temp_dir.iterdir()``: the member order is the directory's (ext4 hash) order, so the
metadata is often not first. The same archives are also built in every order of their members
(``itertools.permutations``). A database the seed was asked for but did not find is named in
``includes`` and absent from the archive. Our own format keeps its metadata first, and its
``*_db_stats`` keep every key of the seed's (the seed's UI sums ``tables`` as "records").
"""

from __future__ import annotations

import itertools
import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypedDict

import pytest

from backup_sidecar.archiver import (
    DatabaseSpec,
    Limits,
    create_backup,
    list_archives,
    read_manifest,
    restore_archive,
    staging_area,
    verify_archive,
)
from backup_sidecar.errors import CorruptArchiveError, RestoreRefusedError
from support.archives import (
    ARROW,
    METADATA,
    NOW,
    SEED_NAME,
    SEED_TIME,
    USER,
    archive_metadata,
    gnu_tar_names,
    members_of,
    seed_backup,
    seed_bomb,
    seed_db_stats,
    seed_like,
    seed_metadata,
)
from support.cli import Sidecar, is_log_record
from support.databases import read_only_dump

ROOT = Path(__file__).resolve().parents[2]
RESTORE_SH = ROOT / "scripts" / "restore-databases.sh"


def _make(path: Path, *, rows: int, tag: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    conn.executemany("INSERT INTO items(body) VALUES (?)", [(f"{tag}-{i}",) for i in range(rows)])
    conn.commit()
    conn.close()
    return path


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def _stderr_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [ln for ln in result.stderr.splitlines() if ln.strip() and not is_log_record(ln)]


#: Every (databases held, member order) a seed archive can have: both databases or one, the
#: metadata anywhere among them.
ORDERS: list[tuple[str, ...]] = [
    order
    for held in ((ARROW, USER), (ARROW,), (USER,))
    for order in itertools.permutations((*held, METADATA))
]


def _order_id(order: tuple[str, ...]) -> str:
    return "+".join(n.split("_")[0].split(".")[0] for n in order)


@pytest.fixture
def sources(tmp_path: Path, fixtures_dir: Path) -> dict[str, Path]:
    """What the seed archived: the 2025-08-14 arrow fixture and a user database of 40 rows."""
    arrow = tmp_path / "source" / ARROW
    arrow.parent.mkdir()
    shutil.copyfile(fixtures_dir / "arrow_database_2025-08-14.db", arrow)
    return {"arrow": arrow, "user": _make(tmp_path / "source" / USER, rows=40, tag="seed")}


@pytest.fixture
def live(tmp_path: Path, fixtures_dir: Path) -> dict[str, Path]:
    """The live databases a restore replaces: other content than the sources."""
    arrow = tmp_path / "live" / ARROW
    arrow.parent.mkdir()
    shutil.copyfile(fixtures_dir / "arrow_database_2025-08-13.db", arrow)
    return {"arrow": arrow, "user": _make(tmp_path / "live" / USER, rows=10, tag="live")}


class SeedScene(TypedDict):
    """The CLI on the live databases, the sources the seed archived, and the backup directory."""

    sidecar: Sidecar
    source: dict[str, Path]
    live: dict[str, Path]
    backup_dir: Path


@pytest.fixture
def seed_scene(
    sources: dict[str, Path],
    live: dict[str, Path],
    backup_dir: Path,
    sidecar_env: Callable[..., Sidecar],
) -> SeedScene:
    return {
        "sidecar": sidecar_env(arrow=live["arrow"], user=live["user"]),
        "source": sources,
        "live": live,
        "backup_dir": backup_dir,
    }


def _seed_in_order(
    backup_dir: Path, sources: dict[str, Path], order: Sequence[str], *, name: str = SEED_NAME
) -> Path:
    """A seed archive of the databases ``order`` names, its members in that order."""
    return seed_backup(
        backup_dir,
        arrow=sources["arrow"] if ARROW in order else None,
        user=sources["user"] if USER in order else None,
        name=name,
        order=order,
    )


def _seed_all_orders(backup_dir: Path, sources: dict[str, Path]) -> dict[str, tuple[str, ...]]:
    """One seed archive per entry of ORDERS in ``backup_dir``; name -> its member order."""
    built = {}
    for i, order in enumerate(ORDERS):
        name = f"archerytools_backup_20250804_{i:06d}"
        _seed_in_order(backup_dir, sources, order, name=name)
        assert gnu_tar_names(backup_dir / f"{name}.tar.gz") == list(order)
        built[name] = order
    return built


def _held(order: Sequence[str]) -> list[str]:
    return sorted(db for db, file in (("arrow", ARROW), ("user", USER)) if file in order)


# --- the premise --------------------------------------------------------------------------------


def test_seed_archive_is_built_as_the_seed_builds_it(seed_scene: SeedScene) -> None:
    """Guard of the tests' own premise: the archive's members are the staged files in the
    staging directory's own order (GNU tar lists them so), and its metadata has the seed's keys
    only, with the seed's stats (unrounded size, table count, per-table row counts)."""
    backup_dir, src = seed_scene["backup_dir"], seed_scene["source"]
    temp_dir = backup_dir / f"temp_{SEED_NAME}"
    temp_dir.mkdir()
    for file in (ARROW, USER, METADATA):  # the seed's creation order
        (temp_dir / file).touch()
    directory_order = [p.name for p in temp_dir.iterdir()]
    shutil.rmtree(temp_dir)
    archive = seed_backup(backup_dir, arrow=src["arrow"], user=src["user"])
    assert gnu_tar_names(archive) == directory_order
    assert not (backup_dir / f"temp_{SEED_NAME}").exists()
    meta = archive_metadata(archive)
    assert set(meta) == {
        "backup_name",
        "created_at",
        "version",
        "includes",
        "arrow_db_stats",
        "user_db_stats",
    }
    assert set(meta["user_db_stats"]) == {"file_size_mb", "table_count", "tables"}
    assert meta["user_db_stats"]["tables"] == {"items": 40}
    assert datetime.fromisoformat(meta["created_at"]).tzinfo is None


def test_orders_cover_metadata_in_every_position() -> None:
    """Guard: the permutations put the metadata first, in the middle and last."""
    positions = {order.index(METADATA) for order in ORDERS}
    assert positions == {0, 1, 2}
    assert len(ORDERS) == 6 + 2 + 2


# --- every member order, through the library ------------------------------------------------


@pytest.mark.parametrize("order", ORDERS, ids=_order_id)
def test_seed_archive_in_any_order_lists_verifies_and_restores(
    order: tuple[str, ...], sources: dict[str, Path], live: dict[str, Path], backup_dir: Path
) -> None:
    """Whatever the order of its members, a seed archive is read as legacy holding exactly the
    databases it holds, verifies (staging each database), and restores them over live
    databases with other content; a database it does not hold is left byte-identical."""
    archive = _seed_in_order(backup_dir, sources, order)
    held = _held(order)
    (listed,) = list_archives(backup_dir)
    assert (listed.status.value, listed.error) == ("legacy", None)
    assert sorted(listed.databases) == held
    assert listed.created_at.replace(tzinfo=None) == SEED_TIME
    with staging_area(backup_dir, purpose="verify") as area:
        verified = verify_archive(archive, staging=area)
        assert sorted(verified.staged) == held
        for db in held:
            assert read_only_dump(verified.staged[db]) == read_only_dump(sources[db])
    assert verified.manifest.legacy
    assert any("checksum" in w for w in verified.warnings)
    untouched = {db: live[db].read_bytes() for db in ("arrow", "user") if db not in held}
    result = restore_archive(
        archive,
        databases={db: DatabaseSpec(db, path) for db, path in live.items()},
        selected=None,
        backup_dir=backup_dir,
        now=NOW,
    )
    assert sorted(result.restored) == held
    for db in held:
        assert read_only_dump(live[db]) == read_only_dump(sources[db]), db
    for db, data in untouched.items():
        assert live[db].read_bytes() == data, db


def test_seed_archive_misses_a_database_its_includes_names(
    sources: dict[str, Path], live: dict[str, Path], backup_dir: Path, tmp_path: Path
) -> None:
    """The seed asked for the arrow database, which did not exist: ``includes`` says true, the
    archive holds only user_data.db. It is listed with the user database alone, verifies with a
    warning naming the missing file, restores the user database, and refuses the arrow one."""
    archive = seed_backup(
        backup_dir, arrow=tmp_path / "nowhere" / ARROW, user=sources["user"], order=(USER, METADATA)
    )
    (listed,) = list_archives(backup_dir)
    assert listed.status.value == "legacy"
    assert listed.databases == ("user",)
    assert read_manifest(archive).raw["includes"]["arrow_database"] is True
    with staging_area(backup_dir, purpose="verify") as area:
        verified = verify_archive(archive, staging=area)
    assert list(verified.staged) == ["user"]
    assert any(ARROW in w for w in verified.warnings), verified.warnings
    specs = {db: DatabaseSpec(db, path) for db, path in live.items()}
    with pytest.raises(RestoreRefusedError, match="does not contain database 'arrow'"):
        restore_archive(
            archive, databases=specs, selected=["arrow"], backup_dir=backup_dir, now=NOW
        )
    arrow_before = live["arrow"].read_bytes()
    result = restore_archive(
        archive, databases=specs, selected=None, backup_dir=backup_dir, now=NOW
    )
    assert result.restored == ("user",)
    assert read_only_dump(live["user"]) == read_only_dump(sources["user"])
    assert live["arrow"].read_bytes() == arrow_before


def test_read_check_passes_seed_archives_in_any_order_and_missing_an_included_database(
    sources: dict[str, Path], backup_dir: Path, tmp_path: Path
) -> None:
    """The read check behind prune and scrub passes every seed archive order, and one whose
    includes names a database it does not hold (a scrub must not mark a good seed archive
    damaged); it fails one holding no database."""
    from backup_sidecar.archiver.readcheck import read_check

    for i, order in enumerate(ORDERS):
        archive = _seed_in_order(backup_dir, sources, order, name=f"order_{i}")
        read_check(archive)
    missing = seed_backup(
        backup_dir, arrow=tmp_path / "nowhere" / ARROW, user=sources["user"], name="missing"
    )
    read_check(missing)
    empty = seed_backup(backup_dir, arrow=tmp_path / "nowhere" / ARROW, user=None, name="empty")
    with pytest.raises(CorruptArchiveError, match="holds no database member"):
        read_check(empty)


#: Seed-looking archives that are not what the seed writes: case -> (members, the fault named).
NOT_SEED: dict[str, tuple[Callable[[bytes], list[tuple[str, bytes]]], str]] = {
    "no_metadata": (lambda db: [(USER, db)], f"holds no {METADATA} (it has '{USER}')"),
    "no_metadata_two_databases": (
        lambda db: [(ARROW, db), (USER, db)],
        f"holds no {METADATA} (it has '{ARROW}', '{USER}')",
    ),
    "metadata_alone": (
        lambda db: [(METADATA, seed_metadata(arrow=True, user=True))],
        "holds no database member",
    ),
    "duplicate_metadata": (
        lambda db: [
            (USER, db),
            (METADATA, seed_metadata(arrow=False, user=True)),
            (METADATA, seed_metadata(arrow=False, user=True)),
        ],
        f"duplicate member '{METADATA}'",
    ),
    "duplicate_database": (
        lambda db: [(USER, db), (METADATA, seed_metadata(arrow=False, user=True)), (USER, db)],
        f"duplicate member '{USER}'",
    ),
    "unexpected_member": (
        lambda db: [
            (USER, db),
            ("notes.txt", b"hi"),
            (METADATA, seed_metadata(arrow=False, user=True)),
        ],
        "unexpected member 'notes.txt'",
    ),
}


@pytest.mark.parametrize("case", sorted(NOT_SEED))
def test_seed_like_archive_that_the_seed_cannot_write_is_damaged(
    case: str, sources: dict[str, Path], backup_dir: Path
) -> None:
    """A tar of seed database members with no metadata at all, a duplicate member, another
    member, or no database: `list` shows it damaged with the reason, verify refuses it with the
    same reason, and nothing is staged."""
    build, fault = NOT_SEED[case]
    archive = backup_dir / f"{case}.tar.gz"
    archive.write_bytes(seed_like(build(sources["user"].read_bytes())))
    (listed,) = list_archives(backup_dir)
    assert listed.status.value == "damaged"
    assert fault in (listed.error or ""), listed.error
    with (
        pytest.raises(CorruptArchiveError, match=fault.replace("(", r"\(").replace(")", r"\)")),
        staging_area(backup_dir, purpose="verify") as area,
    ):
        verify_archive(archive, staging=area)
    assert not any((backup_dir / ".staging").glob("verify-*/*.db"))


def test_our_format_stays_strict_about_its_metadata_coming_first(
    sources: dict[str, Path], backup_dir: Path
) -> None:
    """A backup-sidecar (format 2) archive re-packed with its metadata after a database is
    damaged for list and refused by verify ("first member is ..."), though the seed's archives
    may have theirs anywhere."""
    info = create_backup(
        [DatabaseSpec("user", sources["user"])],
        backup_dir=backup_dir,
        name="ours",
        policy="manual",
        now=NOW,
    )
    members = members_of(info.path.read_bytes())
    info.path.write_bytes(seed_like([(USER, members[USER]), (METADATA, members[METADATA])]))
    (listed,) = list_archives(backup_dir)
    assert listed.status.value == "damaged"
    assert f"first member is '{USER}', not {METADATA}" in (listed.error or "")
    with (
        pytest.raises(CorruptArchiveError, match=f"first member is '{USER}'"),
        staging_area(backup_dir, purpose="verify") as area,
    ):
        verify_archive(info.path, staging=area)


def test_listing_a_seed_archive_reads_a_bounded_amount(
    backup_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tiny archive whose metadata sits behind 64 MiB of zeros: with a 16 MiB scan bound list
    shows it damaged, naming the bound, instead of decompressing on; within the bound it is
    found. A file is scanned once: listing it again reuses the result, until it changes."""
    data = seed_bomb(user_bytes=64 << 20, metadata_first=False)
    assert len(data) < 256 << 10
    archive = backup_dir / "bomb.tar.gz"
    archive.write_bytes(data)
    tight = Limits(legacy_scan_bytes=16 << 20, legacy_scan_ratio=1)
    with pytest.raises(CorruptArchiveError, match=f"within the first {16 << 20} bytes"):
        read_manifest(archive, limits=tight)

    from backup_sidecar.archiver import legacy as legacy_scan

    scans = []
    real_scan = legacy_scan._scan

    def counting(*args: Any, **kwargs: Any) -> Any:
        scans.append(1)
        return real_scan(*args, **kwargs)

    monkeypatch.setattr(legacy_scan, "_scan", counting)
    roomy = Limits(legacy_scan_bytes=128 << 20)
    assert read_manifest(archive, limits=roomy).members() == {"user": USER}
    assert read_manifest(archive, limits=roomy).members() == {"user": USER}
    assert len(scans) == 1
    archive.unlink()
    archive.write_bytes(seed_bomb(user_bytes=1 << 20, metadata_first=False))
    assert read_manifest(archive, limits=roomy).members() == {"user": USER}
    assert len(scans) == 2


# --- the real CLI and the seed's restore script -------------------------------------------------


def test_cli_lists_every_order_and_restores_a_metadata_last_archive(seed_scene: SeedScene) -> None:
    """`list --json` shows every seed archive (each member order) as legacy with the databases
    it holds; `verify` of the archive whose metadata is last passes with the checksum warning;
    `restore --force` puts both databases' content into the live files."""
    sidecar, src, live = seed_scene["sidecar"], seed_scene["source"], seed_scene["live"]
    built = _seed_all_orders(seed_scene["backup_dir"], src)
    rows = {row["name"]: row for row in json.loads(_ok(sidecar.run("list", "--json")).stdout)}
    assert set(rows) == set(built)
    for name, order in built.items():
        assert rows[name]["status"] == "legacy", rows[name]
        assert sorted(rows[name]["databases"]) == _held(order), rows[name]

    (last,) = [n for n, o in built.items() if o == (ARROW, USER, METADATA)]
    verified = _ok(sidecar.run("verify", last))
    assert any("checksum" in ln for ln in _stderr_lines(verified)), verified.stderr
    _ok(sidecar.run("restore", last, "--force"))
    for db in ("arrow", "user"):
        assert read_only_dump(live[db]) == read_only_dump(src[db]), db
    pre = [a for a in list_archives(sidecar.backup_dir) if a.policy == "pre_restore"]
    assert len(pre) == 1
    assert sorted(pre[0].databases) == ["arrow", "user"]


@pytest.mark.parametrize("only", ["user", "arrow"])
def test_cli_restores_one_database_of_a_metadata_middle_archive(
    seed_scene: SeedScene, only: str
) -> None:
    """`restore --<db>-db-only --force` of a seed archive ordered arrow, metadata, user (seen
    in the field) replaces that database only; the other stays byte-identical."""
    sidecar, src, live = seed_scene["sidecar"], seed_scene["source"], seed_scene["live"]
    seed_backup(
        seed_scene["backup_dir"],
        arrow=src["arrow"],
        user=src["user"],
        order=(ARROW, METADATA, USER),
    )
    other = "arrow" if only == "user" else "user"
    other_bytes = live[other].read_bytes()
    _ok(sidecar.run("restore", SEED_NAME, f"--{only}-db-only", "--force"))
    assert read_only_dump(live[only]) == read_only_dump(src[only])
    assert live[other].read_bytes() == other_bytes


def test_restore_script_restores_a_user_then_metadata_archive(seed_scene: SeedScene) -> None:
    """scripts/restore-databases.sh (no daemon) lists a seed archive ordered user_data.db,
    backup_metadata.json (seen in the field), verifies it, and restores it with --user-db-only."""
    sidecar, src, live = seed_scene["sidecar"], seed_scene["source"], seed_scene["live"]
    name = "user_only_20250804_140000"
    seed_backup(
        seed_scene["backup_dir"], arrow=None, user=src["user"], name=name, order=(USER, METADATA)
    )
    env = dict(sidecar.env)
    env.pop("SIDECAR_CONTROL__SOCKET", None)
    env |= {
        "SIDECAR_SOCKET": str(seed_scene["backup_dir"] / "no-daemon.sock"),
        "BACKUP_SIDECAR_BIN": f"{sys.executable} -m backup_sidecar",
    }

    def script(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(RESTORE_SH), *args],
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
            timeout=300,
        )

    listed = _ok(script("--list"))
    assert any(name in ln and "legacy" in ln for ln in listed.stdout.splitlines()), listed.stdout
    _ok(script("--verify", "--file", f"{name}.tar.gz"))
    arrow_bytes = live["arrow"].read_bytes()
    _ok(script("--file", f"{name}.tar.gz", "--user-db-only", "--force"))
    assert read_only_dump(live["user"]) == read_only_dump(src["user"])
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


def test_seed_member_from_a_wal_database_keeps_the_live_journal_mode(
    seed_scene: SeedScene, tmp_path: Path
) -> None:
    """Restoring a seed archive made from a WAL database into a rollback-journal live database
    replaces the content but keeps the live database's journal mode (the application chose it;
    WAL is unsafe on some volumes, e.g. network file systems)."""
    sidecar, live = seed_scene["sidecar"], seed_scene["live"]
    wal_source = _seed_copy_of_wal_database(tmp_path / "wal" / USER, rows=25)
    name = "user_data_only_wal_20250804_140000"
    seed_backup(seed_scene["backup_dir"], arrow=None, user=wal_source, name=name)
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


# --- our archives, read by the seed's tool ------------------------------------------------------


def _seed_list_backups_records(archive: Path) -> dict[str, int]:
    """What the seed's list_backups UI shows per database: the sum of ``stats["tables"]``."""
    metadata = archive_metadata(archive)
    return {
        key: sum(v for v in metadata[key].get("tables", {}).values() if isinstance(v, int))
        for key in ("arrow_db_stats", "user_db_stats")
        if key in metadata
    }


def test_our_archives_keep_every_stats_key_of_the_seed(
    sources: dict[str, Path], backup_dir: Path
) -> None:
    """Our metadata's arrow_db_stats / user_db_stats have every key the seed's _get_db_stats
    wrote (file_size_mb, table_count, tables), with the same table counts and per-table row
    counts the seed computes, so the seed's tool shows the real record counts, not 0."""
    info = create_backup(
        [DatabaseSpec("arrow", sources["arrow"]), DatabaseSpec("user", sources["user"])],
        backup_dir=backup_dir,
        name="ours",
        policy="manual",
        now=NOW,
    )
    meta = archive_metadata(info.path)
    for db, key in (("arrow", "arrow_db_stats"), ("user", "user_db_stats")):
        seed = seed_db_stats(sources[db])
        assert set(meta[key]) >= set(seed), key
        assert meta[key]["tables"] == seed["tables"], key
        assert meta[key]["table_count"] == seed["table_count"], key
        assert meta[key]["file_size_mb"] == pytest.approx(seed["file_size_mb"], abs=0.01)
    records = _seed_list_backups_records(info.path)
    assert records["user_db_stats"] == 40
    assert records["arrow_db_stats"] == sum(seed_db_stats(sources["arrow"])["tables"].values())
    assert records["arrow_db_stats"] > 0
