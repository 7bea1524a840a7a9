"""The daemon's backup reads its new archive back before it publishes the outcome (issue 15's
upload throughput): the upload pass that outcome wakes, and the prune after the backup, find
the archive's read check done in the daemon's cache, with the file's SHA-256, and neither reads
the archive again. A read-back that fails marks the archive damaged and fails the backup.
Real backups, the daemon's scheduled run (ScheduledRuns), the real uploader, a file:// store."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from backup_sidecar import archiver, jobs
from backup_sidecar.archiver import readcheck
from backup_sidecar.errors import CorruptArchiveError
from backup_sidecar.jobs.outcomes import BackupFinished
from backup_sidecar.offsite import Store, parse_target
from backup_sidecar.service.archives import ArchivesPublisher
from backup_sidecar.service.claim import BackupDirClaim
from backup_sidecar.service.health import HealthState
from backup_sidecar.service.live import Configured, LiveConfig
from backup_sidecar.service.metric_families import MetricFamilies
from backup_sidecar.service.metrics import Metrics
from backup_sidecar.service.offsite import OffsiteUploader
from backup_sidecar.service.runs import ScheduledRuns
from backup_sidecar.service.successes import SuccessLedger
from backup_sidecar.settings import load_settings, resolve_paths
from support.archives import flip_database_byte
from support.databases import make_db


def _site(tmp_path: Path) -> tuple[Configured, str]:
    """A sidecar with one WAL database, a scheduled policy with a keep, a file:// store."""
    user = make_db(tmp_path / "data" / "user_data.db", wal=True, rows=50)
    url = f"file://{tmp_path / 'offsite'}"
    config = tmp_path / "sidecar.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "backup_dir": str(tmp_path / "backups"),
                "databases": {"user": {"path": str(user)}},
                "policies": {
                    "pre_restore": {"keep": 10},
                    "daily": {"schedule": "0 3 * * *", "keep": 3},
                },
                "offsite": {"url": url},
            }
        )
    )
    (tmp_path / "backups").mkdir()
    settings = load_settings(config, environ={})
    return Configured.of(settings, resolve_paths(settings, environ={}, cwd=tmp_path)), url


@contextlib.contextmanager
def _no_track(_: str) -> Iterator[None]:
    yield


def _runs(
    configured: Configured, outcomes: jobs.Outcomes, checks: archiver.ReadCheckCache
) -> ScheduledRuns:
    """The daemon's scheduled runs over the real parts, as service/core.py wires them."""
    live = LiveConfig(configured)
    metrics = Metrics(CollectorRegistry(), version="test", policies=["daily"])
    health = HealthState()
    backup_dir = configured.runtime.backup_dir
    return ScheduledRuns(
        live=live,
        outcomes=outcomes,
        metrics=metrics,
        health=health,
        archives=ArchivesPublisher(
            archiver.Catalog(backup_dir),
            live=live,
            ledger=SuccessLedger(metrics),
            metrics=metrics,
            health=health,
        ),
        claim=BackupDirClaim(backup_dir, health=health),
        read_checks=checks,
        track=_no_track,
        stopping=threading.Event(),
        abort=threading.Event(),
    )


def _counting_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every read check of an archive (the real one runs) appends the archive's path."""
    reads: list[Path] = []
    real = readcheck.read_check

    def counted(path: Path, **kwargs: Any) -> readcheck.FileIdentity:
        reads.append(path)
        return real(path, **kwargs)

    monkeypatch.setattr(readcheck, "read_check", counted)
    return reads


def test_the_upload_woken_by_a_backup_finds_its_check_done_and_reads_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduled backup run (backup, then its prune): when the backup's outcome is published
    (what wakes the daemon's uploader) the daemon's cache already holds the archive's passed
    check with the SHA-256 of its bytes; the prune and then the upload pass read nothing more:
    the archive is read once in all, and the copy is confirmed."""
    configured, url = _site(tmp_path)
    backup_dir = configured.runtime.backup_dir
    checks = archiver.ReadCheckCache()
    seen: list[str | None] = []

    def at_outcome(event: object) -> None:
        if isinstance(event, BackupFinished) and event.error is None:
            seen.append(checks.passed_sha256(backup_dir / f"{event.archive}.tar.gz"))

    outcomes = jobs.Outcomes(at_outcome)
    reads = _counting_reads(monkeypatch)
    _runs(configured, outcomes, checks).run_policy("daily")
    (archive,) = sorted(backup_dir.glob("*.tar.gz"))
    assert seen == [hashlib.sha256(archive.read_bytes()).hexdigest()]
    uploader = OffsiteUploader(
        live=LiveConfig(configured),
        families=MetricFamilies(CollectorRegistry(), version="t", clock=lambda: datetime.now(UTC)),
        catalog=archiver.Catalog(backup_dir),
        environ={},
        read_checks=checks,
    )
    assert uploader.sync() == 1
    assert reads == [archive]
    confirmed = {o.name for o in Store(parse_target(url)).list().objects if o.confirmed}
    assert confirmed == {archive.name}


def test_a_backup_whose_read_back_fails_is_marked_damaged_and_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archive written rots before the read-back (a byte flipped as create_backup returns,
    the injected fault): the backup fails naming the archive, its outcome says so, the
    archive is marked damaged (found by the backup) and the cache knows it failed."""
    configured, _ = _site(tmp_path)
    real = archiver.create_backup

    def rotting(*args: Any, **kwargs: Any) -> archiver.ArchiveInfo:
        info = real(*args, **kwargs)
        flip_database_byte(info.path)
        return info

    monkeypatch.setattr(archiver, "create_backup", rotting)
    checks = archiver.ReadCheckCache()
    events: list[object] = []
    with pytest.raises(CorruptArchiveError, match="'rots' is corrupt"):
        jobs.run_backup(
            configured.runtime,
            policy="daily",
            archive_name="rots",
            outcomes=jobs.Outcomes(events.append),
            checks=checks,
        )
    (event,) = events
    assert isinstance(event, BackupFinished) and "'rots' is corrupt" in (event.error or "")
    backup_dir = configured.runtime.backup_dir
    marker = json.loads((backup_dir / "rots.tar.gz.damaged").read_text())
    assert marker["found_by"] == "backup"
    assert checks.check(backup_dir / "rots.tar.gz") is not None
