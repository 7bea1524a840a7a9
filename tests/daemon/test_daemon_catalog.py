"""The daemon keeps one catalog of the backup directory: starting with many policies reads each
archive's metadata once (not once per policy), concurrent socket `list` requests read nothing
again, and archives deleted by hand or written by the daemon show at once.

The reads are counted inside the real daemon process by a spy loaded through sitecustomize:
the real `read_manifest`, which also appends the archive's name to a file.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from backup_sidecar.archiver import DatabaseSpec, create_backup
from support.cli import sitecustomize
from support.daemon import DaemonRunner
from support.waiting import wait_until

_SPY = """\
import os
from backup_sidecar.archiver import catalog
_real = catalog.read_manifest
def _counting(path, **kw):
    fd = os.open(os.environ["READS_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, os.path.basename(str(path)).encode() + b"\\n")
    finally:
        os.close(fd)
    return _real(path, **kw)
catalog.read_manifest = _counting
"""

POLICIES = 20


def reads(log: Path) -> Counter[str]:
    return Counter(log.read_text().split()) if log.exists() else Counter()


def test_many_policies_and_concurrent_lists_share_one_catalog(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    backup_dir: Path,
    tmp_path: Path,
) -> None:
    """With 20 policies whose archives exist, start reads each archive's metadata once (the
    scheduler's catch-up, the ledger and the counts share one scan; before, the directory was
    listed again for every policy: 21+ reads per archive, 37 s at 5,000 archives), 16
    concurrent socket `list` requests read nothing again and get the same answer, and an
    archive deleted by hand or made by a socket backup shows in the next `list`."""
    now = datetime.now(UTC)
    made = []
    for i in range(POLICIES):
        policy = f"p{i:02d}"
        info = create_backup(
            [DatabaseSpec("user", wal_db)],
            backup_dir=backup_dir,
            name=f"{policy}_{i:02d}",
            policy=policy,
            now=now - timedelta(minutes=1),
        )
        made.append(info.path.name)
    policies: dict[str, Any] = {f"p{i:02d}": {"every": "1h", "keep": 3} for i in range(POLICIES)}
    policies["manual"] = {"keep": 5}
    cfg = daemon_config(databases={"user": wal_db}, policies=policies)
    log = tmp_path / "reads.log"
    d = daemons.start(cfg, env={**sitecustomize(tmp_path, _SPY), "READS_LOG": str(log)})
    assert not d.log.find("catch_up_due"), "every policy has a fresh archive"
    mark = d.log.mark()
    wait_until(lambda: d.healthz()[0] == 200, what="healthz 200")
    assert reads(log) == Counter(made), "each archive read once, whatever the policies"
    assert d.log.find("archive_catalog_updated")[-1]["reads"] == POLICIES

    answers: list[list[str]] = []
    errors: list[BaseException] = []

    def list_once() -> None:
        try:
            answers.append([a["name"] for a in d.request("list")["archives"]])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=list_once) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(answers) == 16 and all(a == answers[0] for a in answers)
    assert sorted(answers[0]) == sorted(n.removesuffix(".tar.gz") for n in made)
    assert reads(log) == Counter(made), "concurrent lists read no metadata again"
    assert len(d.log.find("archive_catalog_updated", since=mark)) == 0

    (backup_dir / made[0]).unlink()
    new = d.request("backup")["archive"]
    listed = [a["name"] for a in d.request("list")["archives"]]
    assert listed[0] == new and made[0].removesuffix(".tar.gz") not in listed
    assert reads(log) == Counter([*made, f"{new}.tar.gz"]), "only the new archive is read"
