"""The read-check cache shared by the daemon's threads (issue 15's upload throughput): a check
of an archive that another thread is reading right now (the prune after a backup, while the
offsite upload of that archive starts) waits for that read instead of reading the archive a
second time."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from backup_sidecar import archiver
from backup_sidecar.archiver import readcheck
from support.archives import library_archive
from support.databases import make_db
from support.waiting import wait_until


def _blocked_in_wait(thread: threading.Thread) -> bool:
    frame = sys._current_frames().get(thread.ident or -1)  # where the thread is now
    while frame is not None:
        if frame.f_code.co_name == "wait":
            return True
        frame = frame.f_back
    return False


def test_a_check_already_running_is_waited_for_not_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two threads check the same archive at once: it is read once (the second thread waits
    for the first's read, which is held until the second is either waiting or reading), and
    both get the first's verdict."""
    db = make_db(tmp_path / "user_data.db", wal=True, rows=50)
    (tmp_path / "backups").mkdir()
    path = library_archive(tmp_path / "backups", "shared", user=db)
    real = readcheck.read_check
    reads: list[Path] = []
    release = threading.Event()

    def held(*args: Any, **kwargs: Any) -> readcheck.FileIdentity:
        reads.append(args[0])
        if len(reads) == 1:
            assert release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(readcheck, "read_check", held)
    checks = archiver.ReadCheckCache()
    results: list[str | None] = []
    first = threading.Thread(target=lambda: results.append(checks.check(path)))
    first.start()
    wait_until(lambda: len(reads) == 1, timeout=10, what="the first check reading")
    second = threading.Thread(target=lambda: results.append(checks.check(path)))
    second.start()
    wait_until(
        lambda: len(reads) == 2 or _blocked_in_wait(second),
        timeout=10,
        what="the second check reading or waiting",
    )
    release.set()
    first.join(30)
    second.join(30)
    assert reads == [path]
    assert results == [None, None]
