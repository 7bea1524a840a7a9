"""The upload's read check taken from the daemon's cache (issue 15's upload throughput): an
archive the prune after its backup read a moment ago is not read again while it is sent, yet
rot since that check (which keeps the file's identity, so the cache still says "passed") is
caught: the bytes sent must hash to the bytes the check read, else the archive is read again
and a rotten one is never confirmed. Real backups, the real uploader, a file:// store."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from backup_sidecar import archiver, jobs
from backup_sidecar.archiver import readcheck
from backup_sidecar.offsite import Store, parse_target
from backup_sidecar.service.live import Configured, LiveConfig
from backup_sidecar.service.metric_families import MetricFamilies
from backup_sidecar.service.offsite import OffsiteUploader
from backup_sidecar.settings import load_settings, resolve_paths
from support.archives import flip_database_byte
from support.databases import make_db


def _site(tmp_path: Path) -> tuple[Configured, str]:
    """A configured sidecar with one WAL database and a file:// offsite store."""
    user = make_db(tmp_path / "data" / "user_data.db", wal=True, rows=50)
    url = f"file://{tmp_path / 'offsite'}"
    config = tmp_path / "sidecar.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "backup_dir": str(tmp_path / "backups"),
                "databases": {"user": {"path": str(user)}},
                "policies": {"pre_restore": {"keep": 10}},
                "offsite": {"url": url},
            }
        )
    )
    (tmp_path / "backups").mkdir()
    settings = load_settings(config, environ={})
    return Configured.of(settings, resolve_paths(settings, environ={}, cwd=tmp_path)), url


def _uploader(
    configured: Configured, registry: CollectorRegistry, checks: archiver.ReadCheckCache
) -> OffsiteUploader:
    return OffsiteUploader(
        live=LiveConfig(configured),
        families=MetricFamilies(registry, version="test", clock=lambda: datetime.now(UTC)),
        catalog=archiver.Catalog(configured.runtime.backup_dir),
        environ={},
        read_checks=checks,
    )


def _confirmed(url: str) -> set[str]:
    return {o.name for o in Store(parse_target(url)).list().objects if o.confirmed}


def test_a_passed_check_remembers_the_sha256_of_the_bytes_it_read(tmp_path: Path) -> None:
    """The cache keeps, with a passed result, the SHA-256 of the archive file as read (what an
    upload compares its bytes with); nothing for an archive not checked or found rotten."""
    configured, _ = _site(tmp_path)
    rt = configured.runtime
    sound = jobs.run_backup(rt, policy="manual", names=None, archive_name="sound").path
    rotten = jobs.run_backup(rt, policy="manual", names=None, archive_name="rotten").path
    flip_database_byte(rotten)
    checks = archiver.ReadCheckCache()
    assert checks.passed_sha256(sound) is None
    assert checks.check(sound) is None
    assert checks.passed_sha256(sound) == hashlib.sha256(sound.read_bytes()).hexdigest()
    assert checks.check(rotten) is not None
    assert checks.passed_sha256(rotten) is None


def test_an_archive_the_prune_checked_is_not_read_again_by_its_upload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's cache holds the prune's passed check of the archive: the upload pass
    confirms it without a read check of its own (one injected to fail would stop it)."""
    configured, url = _site(tmp_path)
    rt = configured.runtime
    path = jobs.run_backup(rt, policy="manual", names=None, archive_name="fresh").path
    checks = archiver.ReadCheckCache()
    assert checks.check(path) is None  # the prune after the backup

    def no_second_read(*_: object, **__: object) -> object:
        raise AssertionError("the archive was read again")

    monkeypatch.setattr(readcheck, "read_check", no_second_read)
    registry = CollectorRegistry()
    assert _uploader(configured, registry, checks).sync() == 1
    assert _confirmed(url) == {"fresh.tar.gz"}


def test_rot_after_the_prunes_check_is_caught_by_the_upload(tmp_path: Path) -> None:
    """A database byte flipped after the prune's check passed, size and times put back (the
    cache still says passed): the bytes sent do not hash to the bytes checked, so the upload
    reads the archive again, finds the rot, never writes its record, deletes the object and
    marks the archive damaged (found by the offsite upload)."""
    configured, url = _site(tmp_path)
    rt = configured.runtime
    path = jobs.run_backup(rt, policy="manual", names=None, archive_name="rotten").path
    checks = archiver.ReadCheckCache()
    assert checks.check(path) is None  # the prune after the backup
    before = path.stat()
    flip_database_byte(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert checks.check(path) is None  # same identity: the cache still says passed
    registry = CollectorRegistry()
    assert _uploader(configured, registry, checks).sync() == 0
    assert _confirmed(url) == set()
    assert Store(parse_target(url)).list().objects == ()
    marker = json.loads((rt.backup_dir / "rotten.tar.gz.damaged").read_text())
    assert marker["found_by"] == "offsite upload"
    assert checks.check(path) is not None  # the cache now knows
