"""The daemon's archive catalog: one scan of the backup directory re-reads the metadata of new
and changed archives only, reflects archives that appear, vanish or are replaced and damage
markers that come and go, never follows a link, and keeps no parsed metadata per archive.

Real archives of a real database are counted through an injected describe (the real one, with
a count of the paths it was asked for).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backup_sidecar.archiver import (
    ArchiveInfo,
    ArchiveStatus,
    Catalog,
    DatabaseSpec,
    create_backup,
    list_archives,
    mark_damaged,
)
from backup_sidecar.archiver.catalog import describe
from backup_sidecar.archiver.damage import marker_path
from support.databases import make_db

T0 = datetime(2026, 3, 1, tzinfo=UTC)


class CountingDescribe:
    """The real `describe`, counting the archive names it was asked for."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def __call__(self, path: Path) -> ArchiveInfo:
        self.calls[path.name] += 1
        return describe(path)

    def take(self) -> Counter[str]:
        calls, self.calls = self.calls, Counter()
        return calls


def backup(db: Path, backup_dir: Path, n: int) -> Path:
    now = T0 + timedelta(hours=n)
    return create_backup(
        [DatabaseSpec("user", db)],
        backup_dir=backup_dir,
        name=f"daily_{now:%Y%m%d_%H%M%S}",
        policy="daily",
        now=now,
    ).path


@pytest.fixture
def three(tmp_path: Path, backup_dir: Path) -> list[Path]:
    db = make_db(tmp_path / "user.db", wal=True)
    return [backup(db, backup_dir, n) for n in range(3)]


def names(catalog: Catalog) -> list[str]:
    return [a.name for a in catalog.snapshot().archives]


def test_a_rescan_reads_only_new_and_changed_archives(
    tmp_path: Path, backup_dir: Path, three: list[Path]
) -> None:
    """Only the first scan reads every archive; later scans read nothing unless an archive is
    new, replaced (a new file under the same name) or gets or loses a damage marker; one
    deleted by hand is dropped. Before, every listing read every archive's metadata again."""
    reader = CountingDescribe()
    catalog = Catalog(backup_dir, describe=reader)
    first = catalog.refresh()
    assert reader.take() == Counter(p.name for p in three)
    assert [a.name for a in first.archives] == [p.name[:-7] for p in reversed(three)]

    again = catalog.refresh()
    assert reader.take() == Counter()
    assert again is first, "an unchanged directory keeps the same shared snapshot"

    new = backup(make_db(tmp_path / "other.db", wal=False), backup_dir, 3)
    assert names(catalog) == [p.name[:-7] for p in reversed(three)]  # no scan, no change
    snap = catalog.refresh()
    assert reader.take() == Counter({new.name: 1})
    assert snap.generation == first.generation + 1
    assert names(catalog)[0] == new.name[:-7]

    # Replaced by another file under the same name (rename over it): read again, and shown as
    # what it is now (here, not an archive at all).
    junk = backup_dir / ".junk"
    junk.write_bytes(b"not a gzip file" * 10)
    junk.replace(three[0])
    catalog.refresh()
    assert reader.take() == Counter({three[0].name: 1})
    replaced = next(a for a in catalog.snapshot().archives if a.name == three[0].name[:-7])
    assert replaced.status is ArchiveStatus.DAMAGED

    mark_damaged(three[1], reason="bad CRC", found_by="scrub", now=T0)
    catalog.refresh()
    assert reader.take() == Counter({three[1].name: 1})
    marked = next(a for a in catalog.snapshot().archives if a.name == three[1].name[:-7])
    assert marked.status is ArchiveStatus.DAMAGED and "bad CRC" in (marked.error or "")
    marker_path(three[1]).unlink()
    catalog.refresh()
    assert reader.take() == Counter({three[1].name: 1})
    cleared = next(a for a in catalog.snapshot().archives if a.name == three[1].name[:-7])
    assert cleared.status is ArchiveStatus.VERIFIED

    three[2].unlink()
    snap = catalog.refresh()
    assert reader.take() == Counter()
    assert snap.dropped == 1
    assert three[2].name[:-7] not in names(catalog)
    assert names(catalog) == [a.name for a in list_archives(backup_dir)]


def test_a_changed_file_in_place_is_read_again(backup_dir: Path, three: list[Path]) -> None:
    """An archive rewritten in place (same inode: truncated, or its mode changed so it can no
    longer be read) is read again: the identity includes size, mtime and ctime."""
    reader = CountingDescribe()
    catalog = Catalog(backup_dir, describe=reader)
    catalog.refresh()
    reader.take()
    with three[0].open("r+b") as f:
        f.truncate(100)
    catalog.refresh()
    assert reader.take() == Counter({three[0].name: 1})
    cut = next(a for a in catalog.snapshot().archives if a.name == three[0].name[:-7])
    assert cut.status is ArchiveStatus.DAMAGED
    if os.geteuid() != 0:  # root reads a mode-000 file anyway
        three[1].chmod(0)
        catalog.refresh()
        assert reader.take() == Counter({three[1].name: 1})
        hidden = next(a for a in catalog.snapshot().archives if a.name == three[1].name[:-7])
        assert hidden.status is ArchiveStatus.DAMAGED and "cannot be read" in (hidden.error or "")


def test_links_in_the_backup_directory_are_never_followed(
    tmp_path: Path, backup_dir: Path, three: list[Path]
) -> None:
    """A symbolic link named like an archive (to a real archive elsewhere) is not listed and
    never read; a link planted at a marker's name marks its archive damaged (unreadable
    marker), and swapping the marker for a link is seen as a change."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    target = outside / "real.tar.gz"
    shutil.copyfile(three[0], target)
    (backup_dir / "planted.tar.gz").symlink_to(target)
    (backup_dir / "dir.tar.gz").symlink_to(outside, target_is_directory=True)
    reader = CountingDescribe()
    catalog = Catalog(backup_dir, describe=reader)
    catalog.refresh()
    assert set(reader.take()) == {p.name for p in three}
    assert "planted" not in names(catalog) and "dir" not in names(catalog)

    marker_path(three[0]).symlink_to(target)
    catalog.refresh()
    assert reader.take() == Counter({three[0].name: 1})
    linked = next(a for a in catalog.snapshot().archives if a.name == three[0].name[:-7])
    assert linked.status is ArchiveStatus.DAMAGED
    assert "unreadable" in (linked.error or "")
    assert target.read_bytes() == three[0].read_bytes(), "the link's target is untouched"


def test_listed_archives_keep_no_parsed_metadata(tmp_path: Path, backup_dir: Path) -> None:
    """A listed archive holds what `list` shows (databases, policy, status), not the parsed
    metadata with every table's row count: 5,000 archives of a 300-table database kept
    every count of every table in memory, once per concurrent `list`."""
    db = make_db(tmp_path / "wide.db", wal=False)
    with sqlite3.connect(db) as con:
        for i in range(300):
            con.execute(f"CREATE TABLE t{i} (x)")
    path = backup(db, backup_dir, 0)
    catalog = Catalog(backup_dir)
    (info,) = catalog.refresh().archives
    assert info.manifest is None
    assert info.databases == ("user",) and info.policy == "daily"
    assert info.status is ArchiveStatus.VERIFIED and info.path == path
