"""The scheduled full check of an incremental chain's head: due when the policy has no
verified backup or its newest verified one is `head_check` old; it verifies the head (listed
`verified`), or marks it damaged when it fails."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from backup_sidecar import jobs
from backup_sidecar.archiver import ArchiveStatus, list_archives
from backup_sidecar.jobs.headcheck import check_head_if_due
from backup_sidecar.jobs.pagestores import pages_root
from support.databases import make_db
from support.incremental import incremental_runtime


def _statuses(rt: jobs.Runtime) -> dict[str, ArchiveStatus]:
    return {a.name: a.status for a in jobs.with_incremental(rt, list_archives(rt.backup_dir))}


def _change(db: Path) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE items SET body = body || 'y' WHERE id % 40 = 0")
    conn.close()


def test_head_check_verifies_the_head_when_due_and_only_then(
    tmp_path: Path, backup_dir: Path
) -> None:
    """No verified backup: the check verifies the newest (the head), which lists `verified`
    and the older one stays `unverified`. Right after, with a newer unverified head, it is not
    due (the newest verified is fresh); `head_check` later it is, and verifies the new head."""
    user = make_db(tmp_path / "user_data.db", wal=True, rows=2000)
    rt = incremental_runtime(backup_dir, {"user": user}, head_check_s=3600.0)
    names = [jobs.run_backup(rt, policy="hourly").name]
    _change(user)
    names.append(jobs.run_backup(rt, policy="hourly").name)
    now = datetime.now(UTC)
    done = check_head_if_due(rt, "hourly", now=now, should_stop=lambda: False)
    assert done is not None and done.ok and done.archive == names[1]
    assert _statuses(rt) == {names[0]: ArchiveStatus.UNVERIFIED, names[1]: ArchiveStatus.VERIFIED}
    _change(user)
    names.append(jobs.run_backup(rt, policy="hourly").name)
    assert check_head_if_due(rt, "hourly", now=now, should_stop=lambda: False) is None
    assert check_head_if_due(rt, "other", now=now, should_stop=lambda: False) is None
    later = now + timedelta(hours=1, seconds=1)
    done = check_head_if_due(rt, "hourly", now=later, should_stop=lambda: False)
    assert done is not None and done.ok and done.archive == names[2]
    assert _statuses(rt)[names[2]] is ArchiveStatus.VERIFIED


def test_a_head_that_fails_its_check_is_marked_damaged(tmp_path: Path, backup_dir: Path) -> None:
    """Rotten packs: the head check fails naming the fault and the head lists `damaged`
    (found by the head check), like a scrub's finding."""
    user = make_db(tmp_path / "user_data.db", wal=True, rows=2000)
    rt = incremental_runtime(backup_dir, {"user": user})
    name = jobs.run_backup(rt, policy="hourly").name
    for pack in (pages_root(backup_dir) / "user" / "packs").glob("*.pack"):
        data = bytearray(pack.read_bytes())
        data[len(data) // 3] ^= 0xFF
        pack.chmod(0o600)
        pack.write_bytes(bytes(data))
    done = check_head_if_due(rt, "hourly", now=datetime.now(UTC), should_stop=lambda: False)
    assert done is not None and not done.ok and done.archive == name
    assert done.fault and done.fault.startswith("head check: ")
    listed = jobs.with_incremental(rt, list_archives(backup_dir))
    assert [(a.name, a.status) for a in listed] == [(name, ArchiveStatus.DAMAGED)]
