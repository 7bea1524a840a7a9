"""An archive the policy's prune deletes while the upload job is at it (outside attack, issue
15): `offsite_upload_failed` `[Errno 2] No such file or directory` failed the whole pass. Now
the vanished archive is skipped (info log, not a failure), the others are uploaded, and
nothing of it is left or confirmed offsite. In process on a real file:// store with real
backups and the real uploader; only the deletion is injected, at the file boundary."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from unittest import mock

import pytest
import yaml
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from backup_sidecar import archiver, jobs
from backup_sidecar.offsite import Store, parse_target, store
from backup_sidecar.offsite.transfer import file_chunks as real_file_chunks
from backup_sidecar.offsite.transfer import open_source as real_open_source
from backup_sidecar.service.live import Configured, LiveConfig
from backup_sidecar.service.metric_families import MetricFamilies
from backup_sidecar.service.offsite import OffsiteUploader
from backup_sidecar.settings import load_settings, resolve_paths
from support.databases import make_db


def _site(tmp_path: Path) -> tuple[Configured, str]:
    """A sidecar with one WAL database, a file:// store, and two archives: `flaky` (the
    oldest, uploaded first) and `kept`."""
    user = make_db(tmp_path / "data" / "user_data.db", wal=True, rows=50)
    url = f"file://{tmp_path / 'offsite'}"
    config = tmp_path / "sidecar.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "backup_dir": str(tmp_path / "backups"),
                "databases": {"user": {"path": str(user)}},
                "policies": {"pre_restore": {"keep": 10}},
                "offsite": {"url": url, "attempts": 2},
            }
        )
    )
    (tmp_path / "backups").mkdir()
    settings = load_settings(config, environ={})
    configured = Configured.of(settings, resolve_paths(settings, environ={}, cwd=tmp_path))
    for name in ("flaky", "kept"):
        jobs.run_backup(configured.runtime, policy="manual", names=None, archive_name=name)
    return configured, url


def _uploader(configured: Configured, registry: CollectorRegistry) -> OffsiteUploader:
    return OffsiteUploader(
        live=LiveConfig(configured),
        families=MetricFamilies(registry, version="test", clock=lambda: datetime.now(UTC)),
        catalog=archiver.Catalog(configured.runtime.backup_dir),
        environ={},
    )


def _failures(registry: CollectorRegistry) -> float:
    """Every failure counted, whatever its reason."""
    return sum(
        s.value
        for metric in registry.collect()
        if metric.name == "backup_sidecar_offsite_failures"
        for s in metric.samples
        if s.name == "backup_sidecar_offsite_failures_total"
    )


def _prune_at_open(flaky: Path) -> Callable[[Path], BinaryIO]:
    """open_source, with `flaky` deleted just before the upload opens it."""

    def opening(path: Path) -> BinaryIO:
        if path == flaky:
            flaky.unlink()
        return real_open_source(path)

    return opening


def _prune_once_open(flaky: Path) -> Callable[[Path], BinaryIO]:
    """open_source, with `flaky` deleted just after the upload opened it (its bytes are
    still read whole through the open file)."""

    def opening(path: Path) -> BinaryIO:
        opened = real_open_source(path)
        if path == flaky:
            flaky.unlink()
        return opened

    return opening


def _prune_mid_send(flaky: Path) -> Callable[[object], Iterator[bytes]]:
    """file_chunks, with `flaky` deleted after its first chunk went out and the connection
    then lost (a transient error: the store retries from byte 0, and finds no file)."""

    def chunks(f: object) -> Iterator[bytes]:
        for chunk in real_file_chunks(f):  # type: ignore[arg-type]
            yield chunk
            if flaky.exists():
                flaky.unlink()
                raise ConnectionError("connection reset (injected)")

    return chunks


@pytest.mark.parametrize(
    ("target", "fault"),
    [
        ("open_source", _prune_at_open),
        ("open_source", _prune_once_open),
        ("file_chunks", _prune_mid_send),
    ],
    ids=["before-open", "after-open", "between-attempts"],
)
def test_an_archive_pruned_during_the_pass_is_skipped_not_a_failure(
    tmp_path: Path, target: str, fault: Callable[[Path], object]
) -> None:
    """`flaky` is deleted from the backup directory (as the policy's prune does) just before
    the upload opens it, just after, or between two attempts of it (after a first part went
    out): the pass still uploads `kept` and counts no failure, its state has no error, the
    skip is logged at info naming the archive, and the store holds no object, record or
    staging file of `flaky`. (The pass failed with `[Errno 2] No such file or directory`,
    nothing after it sent; or, pruned after opening, an unchecked copy was confirmed.)"""
    configured, url = _site(tmp_path)
    flaky = configured.runtime.backup_dir / "flaky.tar.gz"
    registry = CollectorRegistry()
    uploader = _uploader(configured, registry)
    with (
        mock.patch.object(store, target, fault(flaky)),
        capture_logs() as logs,
    ):
        assert uploader.sync() == 1
    assert not flaky.exists()
    listed = Store(parse_target(url)).list()
    assert [(o.name, o.confirmed) for o in listed.objects] == [("kept.tar.gz", True)]
    leftovers = [p.name for p in (tmp_path / "offsite").rglob("*") if "flaky" in p.name]
    assert leftovers == []
    assert _failures(registry) == 0
    assert uploader.state.snapshot().last_error is None
    events = {e["event"]: e for e in logs}
    assert "offsite_upload_failed" not in events
    skipped = events["offsite_upload_skipped"]
    assert (skipped["log_level"], skipped["archive"]) == ("info", "flaky.tar.gz")
    assert uploader.sync() == 0  # nothing pending: `flaky` is gone, `kept` confirmed
    assert _failures(registry) == 0
