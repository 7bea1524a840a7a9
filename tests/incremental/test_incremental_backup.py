"""`mode: incremental`: a policy's backup goes into the page store of each database, read in
one read transaction while a real writer commits, with the metadata a full archive records."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backup_sidecar import jobs
from backup_sidecar.errors import PageReadError, UnsafeEntryError
from backup_sidecar.jobs.pagedamage import DAMAGED_DIR, write_marker
from backup_sidecar.jobs.pagestores import list_page_backups, pages_root
from support.databases import Writer, count, integrity, make_db
from support.incremental import incremental_runtime, manifests, rebuild_to
from support.pages import load


@pytest.mark.parametrize("wal", [True, False], ids=["wal", "rollback"])
def test_incremental_backups_during_writes_rebuild_to_checked_images(
    tmp_path: Path,
    backup_dir: Path,
    writer_process: Callable[..., Writer],
    wal: bool,
) -> None:
    """Two backups of an incremental policy while a writer commits: each database's manifest
    records the policy, the sequence, the check that ran and its result, the schema hash and
    row counts of exactly the image it rebuilds to; the second continues the chain (parent,
    length 2) and stores far less than the first."""
    user = make_db(tmp_path / "user_data.db", wal=wal, rows=3000)
    arrow = make_db(tmp_path / "arrow_database.db", wal=not wal, rows=500)
    rt = incremental_runtime(backup_dir, {"user": user, "arrow": arrow}, check="quick")
    writer = writer_process(user, rate=200.0)
    first = jobs.run_backup(rt, policy="hourly")
    done = writer.committed()
    while writer.committed() < done + 20:  # the second backup sees new commits
        pass
    second = jobs.run_backup(rt, policy="hourly")
    assert writer.stop()["errors"] == 0
    assert (first.sequence, second.sequence) == (1, 2)
    assert first.status.value == "unverified"
    for db in ("user", "arrow"):
        assert manifests(backup_dir, db) == sorted([first.name, second.name])
    out = tmp_path / "rebuilt.db"
    m = rebuild_to(backup_dir, "user", second.name, out)
    assert integrity(out) == "ok"
    meta = m.metadata
    assert meta["policy"] == "hourly" and meta["sequence"] == 2
    assert (meta["check"], meta["integrity_check"]) == ("quick", "ok")
    assert meta["parent"] == first.name
    assert meta["chain"]["base"] == first.name and meta["chain"]["length"] == 2
    assert meta["row_counts"]["ticks"] == count(out, "SELECT count(*) FROM ticks")
    assert meta["row_counts"]["items"] == 3000
    assert len(meta["schema_sha256"]) == 64
    assert second.size_bytes < first.size_bytes / 4
    listed, problems = list_page_backups(backup_dir)
    assert [b.name for b in listed] == [second.name, first.name] and problems == []


def test_the_default_check_is_integrity_check(tmp_path: Path, backup_dir: Path) -> None:
    """Without `check:` an incremental backup runs the full integrity_check, as archives do."""
    user = make_db(tmp_path / "user_data.db", wal=True)
    rt = incremental_runtime(backup_dir, {"user": user})
    info = jobs.run_backup(rt, policy="hourly")
    m = rebuild_to(backup_dir, "user", info.name, tmp_path / "out.db")
    assert m.metadata["check"] == "full"


def test_a_rebase_starts_a_new_chain(tmp_path: Path, backup_dir: Path) -> None:
    """`rebase.after`: a backup once the chain's first is that old has no parent; so does one
    after the chain stored more than `stored_fraction` of the database's size."""
    user = make_db(tmp_path / "user_data.db", wal=True)
    now = [datetime(2026, 12, 7, 12, tzinfo=UTC)]
    rt = incremental_runtime(backup_dir, {"user": user}, rebase_after=3600.0)
    rt = jobs.Runtime(**{**rt.__dict__, "clock": lambda: now[0]})
    names = []
    for step in (0, 30, 30, 30):  # minutes after the previous backup
        now[0] += timedelta(minutes=step)
        names.append(jobs.run_backup(rt, policy="hourly").name)
    out = tmp_path / "o.db"
    parents = []
    for name in names:
        parents.append(rebuild_to(backup_dir, "user", name, out).metadata.get("parent"))
        out.unlink()
    assert parents == [None, names[0], None, names[2]]  # the 3rd is 1 h after the base
    tiny = incremental_runtime(backup_dir, {"user": user}, rebase_fraction=0.01)
    with sqlite3.connect(user) as conn:
        conn.execute("INSERT INTO items(body) VALUES ('x')")
    grown = jobs.run_backup(tiny, policy="hourly", archive_name="grown").name
    assert rebuild_to(backup_dir, "user", grown, out).metadata["parent"] == names[3]
    out.unlink()  # the chain has now stored more than 1% of the database's size
    name = jobs.run_backup(tiny, policy="hourly", archive_name="after_fraction").name
    assert "parent" not in rebuild_to(backup_dir, "user", name, out).metadata


def test_a_database_failing_its_check_stores_nothing_for_any_database(
    tmp_path: Path, backup_dir: Path
) -> None:
    """A database that fails the check fails the backup, naming the file; the manifest the
    backup already wrote for the other database is removed: no partial restore point."""
    good = make_db(tmp_path / "arrow_database.db", wal=True)
    bad = make_db(tmp_path / "user_data.db", wal=False, rows=2000)
    with sqlite3.connect(bad) as conn:  # the index's root page, overwritten
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name='items_body'"
        ).fetchone()
    with bad.open("r+b") as f:
        f.seek((root - 1) * 4096)
        f.write(b"\xff" * 4096)
    rt = incremental_runtime(backup_dir, {"arrow": good, "user": bad}, check="quick")
    with pytest.raises(PageReadError, match=r"user_data\.db"):
        jobs.run_backup(rt, policy="hourly", names=["arrow", "user"])
    assert manifests(backup_dir, "arrow") == [] and manifests(backup_dir, "user") == []


def test_a_link_planted_as_the_pages_directory_is_refused(tmp_path: Path, backup_dir: Path) -> None:
    """`<backup_dir>/pages` as a symbolic link is never followed: the backup fails naming it,
    and nothing is written where the link points."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (backup_dir / "pages").symlink_to(elsewhere)
    rt = incremental_runtime(backup_dir, {"user": make_db(tmp_path / "user_data.db", wal=True)})
    with pytest.raises(UnsafeEntryError, match="pages"):
        jobs.run_backup(rt, policy="hourly")
    assert list(elsewhere.iterdir()) == []


def test_a_lost_sequence_counter_never_reorders_a_chain(tmp_path: Path, backup_dir: Path) -> None:
    """The creation-sequence counter deleted after two incremental backups (it is a cache,
    rebuilt from what is on disk): the third still gets sequence 3 and the second as its
    parent. Before, the counter was rebuilt from the .tar.gz archives alone: the third got
    sequence 1, listed oldest, and the next backup took the second as its parent again."""
    user = make_db(tmp_path / "user_data.db", wal=True)
    rt = incremental_runtime(backup_dir, {"user": user})
    first = jobs.run_backup(rt, policy="hourly", archive_name="first")
    second = jobs.run_backup(rt, policy="hourly", archive_name="second")
    (backup_dir / ".locks" / "sequence.lock").unlink()
    third = jobs.run_backup(rt, policy="hourly", archive_name="third")
    assert (first.sequence, second.sequence, third.sequence) == (1, 2, 3)
    m = rebuild_to(backup_dir, "user", "third", tmp_path / "third.db")
    assert m.metadata["parent"] == "second"
    listed, _ = list_page_backups(backup_dir)
    assert [b.name for b in listed] == ["third", "second", "first"]


def test_an_unchanged_database_takes_the_parents_check_unless_the_parent_is_damaged(
    tmp_path: Path, backup_dir: Path
) -> None:
    """A policy's backup of an unchanged database records its parent's passed check
    (`check_of`) instead of running integrity_check again; once the parent is marked damaged
    (scrub, drill, head check), the next backup runs the check itself."""
    user = make_db(tmp_path / "user_data.db", wal=True, rows=500)
    rt = incremental_runtime(backup_dir, {"user": user}, keep=10)
    names = [jobs.run_backup(rt, policy="hourly", archive_name=f"h{i}").name for i in range(2)]
    store = pages_root(backup_dir) / "user"
    second = load(store, names[1])
    assert second.metadata["check_of"] == names[0]
    assert second.metadata["row_counts"] == {"items": 500}
    write_marker(backup_dir, DAMAGED_DIR, "user", names[1], f"{second.image_sha256}\nscrub")
    third = load(store, jobs.run_backup(rt, policy="hourly", archive_name="h2").name)
    assert third.metadata["parent"] == names[1]
    assert "check_of" not in third.metadata
    assert (third.metadata["check"], third.metadata["integrity_check"]) == ("full", "ok")
