"""The scrub and the restore drill read incremental backups: each rebuilt and checked, a rotten
pack marks the backups it breaks damaged (listed so, with the reason, and counted by the
daemon's summaries), and the drill takes an incremental policy's newest backup."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from backup_sidecar import jobs, pagestore
from backup_sidecar.archiver import ArchiveStatus, list_archives
from backup_sidecar.errors import CorruptArchiveError
from backup_sidecar.jobs.pagedamage import mark_page_damaged
from backup_sidecar.jobs.pagestores import find_page_backup, pages_root
from backup_sidecar.jobs.pagesummary import page_successes
from support.databases import make_db
from support.incremental import incremental_runtime


def _two_backups(tmp_path: Path, backup_dir: Path) -> tuple[jobs.Runtime, list[str]]:
    user = make_db(tmp_path / "user_data.db", wal=True, rows=2000)
    rt = incremental_runtime(backup_dir, {"user": user})
    names = [jobs.run_backup(rt, policy="hourly").name]
    conn = sqlite3.connect(user)
    with conn:
        conn.execute("UPDATE items SET body = body || 'x' WHERE id % 50 = 0")
    conn.close()
    names.append(jobs.run_backup(rt, policy="hourly").name)
    return rt, names


def _rot_packs(backup_dir: Path) -> None:
    for pack in (pages_root(backup_dir) / "user" / "packs").glob("*.pack"):
        data = bytearray(pack.read_bytes())
        data[len(data) // 3] ^= 0xFF
        pack.chmod(0o600)
        pack.write_bytes(bytes(data))


def _statuses(rt: jobs.Runtime) -> dict[str, ArchiveStatus]:
    return {a.name: a.status for a in jobs.with_incremental(rt, list_archives(rt.backup_dir))}


def test_scrub_rebuilds_every_incremental_and_marks_the_rotten_damaged(
    tmp_path: Path, backup_dir: Path
) -> None:
    """A clean store: the scrub passes both incrementals and they list `verified`. A flipped
    byte in every pack: the next scrub reports both damaged with the fault, `list` shows them
    `damaged` with that reason, the daemon's summary (archive and damaged counts, alarm) sees
    them damaged, and a third scrub skips them. (Before: the scrub read only .tar.gz archives
    and passed with an empty report.)"""
    rt, names = _two_backups(tmp_path, backup_dir)
    report = jobs.run_scrub(rt)
    assert sorted(report.passed) == sorted(names) and not report.damaged
    assert set(_statuses(rt).values()) == {ArchiveStatus.VERIFIED}
    _rot_packs(backup_dir)
    report = jobs.run_scrub(rt)
    assert sorted(n for n, _ in report.damaged) == sorted(names)
    assert all(why.startswith("scrub: ") for _, why in report.damaged)
    listed = jobs.with_incremental(rt, list_archives(rt.backup_dir))
    assert {a.status for a in listed} == {ArchiveStatus.DAMAGED}
    assert all(a.error and a.error.startswith("scrub: ") for a in listed)
    assert {a.status for a in page_successes(backup_dir)} == {ArchiveStatus.DAMAGED}
    assert sorted(jobs.run_scrub(rt).skipped) == sorted(names)


def test_a_verify_that_passes_clears_a_scrubs_damage_mark(tmp_path: Path, backup_dir: Path) -> None:
    """After a scrub marked a backup damaged, restoring the packs and a verify that passes
    clears the mark (every alarm clears when its cause goes): listed verified, and the
    daemon's summary counts it as a success again."""
    rt, names = _two_backups(tmp_path, backup_dir)
    originals = {p: p.read_bytes() for p in (pages_root(backup_dir) / "user" / "packs").iterdir()}
    _rot_packs(backup_dir)
    jobs.run_scrub(rt)
    assert _statuses(rt)[names[1]] is ArchiveStatus.DAMAGED
    for path, data in originals.items():
        path.write_bytes(data)
    jobs.run_verify(rt, names[1])
    assert _statuses(rt)[names[1]] is ArchiveStatus.VERIFIED
    assert names[1] in {a.name for a in page_successes(backup_dir)}
    assert {a.status for a in page_successes(backup_dir) if a.name == names[1]} == {
        ArchiveStatus.UNVERIFIED
    }


def test_drill_takes_an_incremental_policys_newest_backup(tmp_path: Path, backup_dir: Path) -> None:
    """Only incremental backups: the drill rebuilds the newest and checks its row counts (it
    used to fail: no verified archive), which lists it verified; with its packs rotten it
    fails naming it and marks it damaged."""
    rt, names = _two_backups(tmp_path, backup_dir)
    report = jobs.run_drill(rt)
    assert report.ok and report.archive == names[1] and report.databases == ("user",)
    assert _statuses(rt)[names[1]] is ArchiveStatus.VERIFIED
    _rot_packs(backup_dir)
    with pytest.raises(CorruptArchiveError, match=names[1]):
        jobs.run_drill(rt)
    assert _statuses(rt)[names[1]] is ArchiveStatus.DAMAGED


def test_a_damaged_incremental_is_never_pruned_nor_counted(
    tmp_path: Path, backup_dir: Path
) -> None:
    """Like a damaged archive: with keep 2 and the oldest of three backups marked damaged
    (the marker a scrub writes, injected), the prune deletes nothing (the two good ones are
    the keep) and the damaged one stays listed `damaged`. (Before: it counted toward the keep
    and was deleted, taking the evidence and the alarm with it.)"""
    rt, names = _two_backups(tmp_path, backup_dir)
    backup = find_page_backup(backup_dir, names[0])
    assert backup is not None
    mark_page_damaged(backup_dir, backup, "scrub: injected", found_by="scrub")
    names.append(jobs.run_backup(rt, policy="hourly").name)
    pruned = jobs.run_prune(rt, policies=["hourly"], keep=2)
    assert not pruned.deleted
    assert _statuses(rt)[names[0]] is ArchiveStatus.DAMAGED
    assert sorted(_statuses(rt)) == sorted(names)


def test_the_scrub_rebuilds_equal_backups_once_and_still_finds_rot_in_each(
    tmp_path: Path, backup_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three backups of an unchanged database (the same pages, image and facts) and one after
    a write: the scrub passes all four, listed `verified`, with two rebuilds (one per distinct
    backup), not four. After a flipped byte in every pack, the next scrub finds each of the
    four damaged: an equal backup is taken as passed only after one passed in the same scrub."""
    user = make_db(tmp_path / "user_data.db", wal=True, rows=2000)
    rt = incremental_runtime(backup_dir, {"user": user}, keep=10)
    names = [jobs.run_backup(rt, policy="hourly", archive_name=f"h{i}").name for i in range(3)]
    with sqlite3.connect(user) as conn:
        conn.execute("UPDATE items SET body = body || 'x' WHERE id % 50 = 0")
    names.append(jobs.run_backup(rt, policy="hourly", archive_name="h3").name)
    rebuilt: list[str] = []
    real = pagestore.rebuild

    def counting(store: Path, name: str, **kw: Any) -> pagestore.Manifest:
        rebuilt.append(name)
        return real(store, name, **kw)

    monkeypatch.setattr(pagestore, "rebuild", counting)
    report = jobs.run_scrub(rt)
    assert sorted(report.passed) == sorted(names) and not report.damaged
    assert sorted(rebuilt) == ["h2", "h3"]  # newest first: h2 stands for h1 and h0
    assert set(_statuses(rt).values()) == {ArchiveStatus.VERIFIED}
    _rot_packs(backup_dir)
    report = jobs.run_scrub(rt)
    assert sorted(n for n, _ in report.damaged) == sorted(names)
