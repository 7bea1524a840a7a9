"""The daemon's upload job in process, on a file:// store: an upload that outlasts its lease's
TTL keeps the lease (renewed on a thread) and is confirmed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import pytest
import yaml
from prometheus_client import CollectorRegistry

from backup_sidecar import archiver, jobs
from backup_sidecar.offsite import Store, parse_target, transfer
from backup_sidecar.offsite import store as store_module
from backup_sidecar.service.live import Configured, LiveConfig
from backup_sidecar.service.metric_families import MetricFamilies
from backup_sidecar.service.offsite import OffsiteUploader
from backup_sidecar.settings import load_settings, resolve_paths
from support.databases import make_db


def test_an_upload_longer_than_the_lease_is_still_confirmed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The link is slowed (a 2.5 s pause after the last byte: the injected fault) past the
    1 s lease: the uploader renews the lease while the bytes go out, so the record is written
    and the archive is confirmed, with no failure counted."""
    user = make_db(tmp_path / "data" / "user_data.db", wal=True, rows=50)
    url = f"file://{tmp_path / 'offsite'}"
    config = tmp_path / "sidecar.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "backup_dir": str(tmp_path / "backups"),
                "databases": {"user": {"path": str(user)}},
                "policies": {"pre_restore": {"keep": 10}},
                "offsite": {"url": url, "lease_ttl": "1s"},
            }
        )
    )
    (tmp_path / "backups").mkdir()
    settings = load_settings(config, environ={})
    configured = Configured.of(settings, resolve_paths(settings, environ={}, cwd=tmp_path))
    jobs.run_backup(configured.runtime, policy="manual", names=None, archive_name="long")
    real = transfer.file_chunks

    def slow_link(f: BinaryIO) -> Iterator[bytes]:
        yield from real(f)
        time.sleep(2.5)  # the fault: the last byte is acknowledged after the lease's TTL

    monkeypatch.setattr(store_module, "file_chunks", slow_link)
    registry = CollectorRegistry()
    uploader = OffsiteUploader(
        live=LiveConfig(configured),
        families=MetricFamilies(registry, version="test", clock=lambda: datetime.now(UTC)),
        catalog=archiver.Catalog(tmp_path / "backups"),
        environ={},
    )
    assert uploader.sync() == 1
    assert Store(parse_target(url)).confirm("long.tar.gz").confirmed
    assert (registry.get_sample_value("backup_sidecar_offsite_upload_bytes_total") or 0) > 0
    failures = [s for m in registry.collect() for s in m.samples if "offsite_failures" in s.name]
    assert failures == []
