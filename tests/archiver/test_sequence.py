"""The creation sequence: archives are ordered by the order they were written in, never by the
wall-clock time in their metadata (issue 13 item 3)."""

from __future__ import annotations

import json
import os
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backup_sidecar.archiver import (
    ArchiveStatus,
    DatabaseSpec,
    create_backup,
    list_archives,
    reconcile_sequence,
    select_expired,
)
from backup_sidecar.archiver.manifest import MAX_SEQUENCE, parse_metadata
from backup_sidecar.archiver.sequence import next_sequence
from backup_sidecar.errors import BackupDirError, ManifestError
from support.databases import make_db

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
COUNTER = Path(".locks") / "sequence.lock"


@pytest.fixture
def spec(tmp_path: Path) -> DatabaseSpec:
    return DatabaseSpec("user", make_db(tmp_path / "user_data.db", wal=True, rows=20))


def backup(
    backup_dir: Path, spec: DatabaseSpec, name: str, now: datetime, policy: str = "often"
) -> int:
    info = create_backup([spec], backup_dir=backup_dir, name=name, policy=policy, now=now)
    assert info.sequence is not None
    return info.sequence


def test_a_clock_stepped_back_does_not_make_old_archives_the_newest(
    tmp_path: Path, spec: DatabaseSpec
) -> None:
    """Three archives written at noon, then two after the clock stepped back a day: `list`
    shows the two last written first, and retention with keep 3 expires the two first written
    (ordering by the time in the metadata kept the three from "the future" and expired each
    new one)."""
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    for i in range(3):
        backup(backup_dir, spec, f"often_{i}", NOW + timedelta(seconds=i))
    for i in range(3, 5):
        backup(backup_dir, spec, f"often_{i}", NOW - timedelta(days=1) + timedelta(seconds=i))
    listed = list_archives(backup_dir)
    assert [a.name for a in listed] == ["often_4", "often_3", "often_2", "often_1", "often_0"]
    assert [a.sequence for a in listed] == [5, 4, 3, 2, 1]
    expired = select_expired(listed, keep={"often": 3})
    assert sorted(a.name for a in expired) == ["often_0", "often_1"]


def test_the_counter_is_rebuilt_from_disk_and_raised_to_what_is_on_disk(
    tmp_path: Path, spec: DatabaseSpec
) -> None:
    """The counter file is a cache: deleted or garbled, the next number is one more than the
    highest sequence on disk; lower than an archive on disk (an old copy of the directory),
    `reconcile` raises it, so the next archive is still the newest."""
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    assert backup(backup_dir, spec, "a", NOW) == 1
    assert backup(backup_dir, spec, "b", NOW) == 2
    (backup_dir / COUNTER).unlink()
    assert backup(backup_dir, spec, "c", NOW) == 3
    (backup_dir / COUNTER).write_text("not a number\n")
    assert backup(backup_dir, spec, "d", NOW) == 4
    (backup_dir / COUNTER).write_text("1\n")
    assert reconcile_sequence(backup_dir, seen=4) is True
    assert reconcile_sequence(backup_dir, seen=4) is False
    assert backup(backup_dir, spec, "e", NOW - timedelta(days=3)) == 5
    assert list_archives(backup_dir)[0].name == "e"


def test_archives_without_a_sequence_sort_below_sequenced_ones(
    tmp_path: Path, spec: DatabaseSpec
) -> None:
    """An archive without a sequence (the seed's, or one written before it was recorded) is
    read as before and sorts below every sequenced one, by its time, even when dated a year
    later: "newest" is what this sidecar wrote last."""
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    backup(backup_dir, spec, "manual_new", NOW, policy="manual")
    meta = tmp_path / "backup_metadata.json"
    meta.write_text(json.dumps({"backup_name": "manual_seed", "version": "1.0.0",
                                "created_at": (NOW + timedelta(days=365)).isoformat(),
                                "includes": {"user_database": True}}))  # fmt: skip
    with tarfile.open(backup_dir / "manual_seed.tar.gz", "w:gz") as tar:
        tar.add(meta, arcname="backup_metadata.json")
        tar.add(spec.path, arcname="user_data.db")
    listed = list_archives(backup_dir)
    assert [(a.name, a.sequence) for a in listed] == [("manual_new", 1), ("manual_seed", None)]
    assert listed[1].status is ArchiveStatus.LEGACY
    expired = select_expired(listed, keep={"manual": 1})
    assert [a.name for a in expired] == ["manual_seed"]


@pytest.mark.parametrize("value", [True, 0, -3, "7", 1.5, 2**53 + 1, 2**63 - 1, None])
def test_a_bad_sequence_is_refused_naming_the_key(value: object) -> None:
    """A sequence that is not an integer from 1 to 2**53 makes the metadata invalid (the
    archive is listed damaged), with the key named: a planted archive claiming 2**63-1 made
    every later archive share that number, and the wall clock ordered them again."""
    doc = {"backup_name": "x", "created_at": NOW.isoformat(), "includes": {"user_database": True},
           "sequence": value}  # fmt: skip
    with pytest.raises(ManifestError, match="key 'sequence'"):
        parse_metadata(json.dumps(doc).encode())


def test_a_damaged_archive_sorts_below_sequenced_ones(tmp_path: Path, spec: DatabaseSpec) -> None:
    """A damaged file dated far in the future is listed, but below the archive just written."""
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    backup(backup_dir, spec, "often_1", NOW)
    junk = backup_dir / "often_2.tar.gz"
    junk.write_bytes(b"not gzip")
    future = (NOW + timedelta(days=365)).timestamp()
    os.utime(junk, (future, future))
    listed = list_archives(backup_dir)
    assert [a.name for a in listed] == ["often_1", "often_2"]
    assert listed[1].status is ArchiveStatus.DAMAGED


def test_the_counter_never_hands_out_a_number_twice(tmp_path: Path, spec: DatabaseSpec) -> None:
    """A counter at the maximum (planted: no directory gets there) fails the next backup with
    one line naming the file, instead of giving two archives the same sequence."""
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    backup(backup_dir, spec, "often_1", NOW)
    (backup_dir / ".locks" / "sequence.lock").write_text(f"{MAX_SEQUENCE}\n")
    with pytest.raises(BackupDirError, match=r"sequence\.lock"):
        next_sequence(backup_dir)
    (backup_dir / ".locks" / "sequence.lock").write_text(f"{MAX_SEQUENCE - 1}\n")
    assert next_sequence(backup_dir) == MAX_SEQUENCE
