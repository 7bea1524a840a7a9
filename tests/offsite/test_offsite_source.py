"""The upload job counts a local archive as offsite only when the same-named confirmed object
was made from it (its record's source SHA-256): another sidecar's object of the same name is
reported, never counted, never overwritten (outside attack on issue 15)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from backup_sidecar import archiver, jobs
from backup_sidecar.offsite import Lease, OffsiteObject, Record, Store, parse_target
from backup_sidecar.service.live import Configured, LiveConfig
from backup_sidecar.service.metric_families import MetricFamilies
from backup_sidecar.service.offsite import OffsiteUploader
from backup_sidecar.service.offsite_sums import SourceSums, split
from backup_sidecar.settings import load_settings, resolve_paths
from support.databases import make_db
from support.offsite import fast_retry


def _site(tmp_path: Path) -> tuple[Configured, str]:
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


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_a_same_named_object_of_another_sidecar_is_not_counted(tmp_path: Path) -> None:
    """Another sidecar uploaded other bytes under this archive's name (confirmed, with its own
    record): the pass uploads nothing over it, keeps the archive pending, logs
    ``offsite_source_mismatch`` and counts one ``mismatch`` failure (once, not every pass);
    the other sidecar's object is untouched. An archive of this sidecar is counted."""
    configured, url = _site(tmp_path)
    jobs.run_backup(configured.runtime, policy="manual", names=None, archive_name="same")
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    (other_dir / "same.tar.gz").write_bytes(b"another sidecar's archive of the same name")
    other = Store(parse_target(url), retry=fast_retry())
    their_lease = Lease(other, ttl=300)
    assert their_lease.acquire().writable
    theirs = other.upload(other_dir / "same.tar.gz", lease=their_lease)
    their_lease.release()
    registry = CollectorRegistry()
    uploader = OffsiteUploader(
        live=LiveConfig(configured),
        families=MetricFamilies(registry, version="test", clock=lambda: datetime.now(UTC)),
        catalog=archiver.Catalog(tmp_path / "backups"),
        environ={},
    )
    with capture_logs() as logs:
        assert uploader.sync() == 0
        assert uploader.sync() == 0
    mismatches = [e for e in logs if e["event"] == "offsite_source_mismatch"]
    assert len(mismatches) == 1
    local_sha = hashlib.sha256((tmp_path / "backups/same.tar.gz").read_bytes()).hexdigest()
    assert mismatches[0]["local_sha256"] == local_sha
    assert mismatches[0]["record_source_sha256"] == theirs.source_sha256
    assert _sample(registry, "backup_sidecar_offsite_failures_total", reason="mismatch") == 1
    assert _sample(registry, "backup_sidecar_offsite_pending_archives") == 1
    stored = Store(parse_target(url)).read_record("same.tar.gz")
    assert stored is not None and stored.sha256 == theirs.sha256
    assert (tmp_path / "offsite/same.tar.gz").read_bytes().startswith(b"another sidecar")
    jobs.run_backup(configured.runtime, policy="manual", names=None, archive_name="mine")
    assert uploader.sync() == 1
    assert uploader.sync() == 0
    assert _sample(registry, "backup_sidecar_offsite_pending_archives") == 1
    assert _sample(registry, "backup_sidecar_offsite_failures_total", reason="mismatch") == 1


def test_records_without_a_source_checksum(tmp_path: Path) -> None:
    """A record written before ``source_sha256`` existed: a plaintext object counts when its
    own SHA-256 is the local archive's (it is the same bytes) and is a mismatch otherwise;
    an encrypted one cannot be compared and stays pending (uploaded again, with the field)."""
    configured, _url = _site(tmp_path)
    jobs.run_backup(configured.runtime, policy="manual", names=None, archive_name="old")
    (archive,) = jobs.listing(configured.runtime, archiver.Catalog(tmp_path / "backups"))
    digest = hashlib.sha256(archive.path.read_bytes()).hexdigest()
    size = archive.path.stat().st_size
    now = datetime.now(UTC)

    def listed(name: str, sha: str, *, encrypted: bool) -> OffsiteObject:
        record = Record(name, size, sha, None, encrypted, size)
        return OffsiteObject(name, size, now, encrypted, True, "confirmed", record)

    sums = SourceSums()
    same = split([archive], [listed("old.tar.gz", digest, encrypted=False)], suffix="", sums=sums)
    assert (same.confirmed, same.pending, same.mismatched) == ({"old.tar.gz": now}, [], [])
    other = split(
        [archive], [listed("old.tar.gz", "0" * 64, encrypted=False)], suffix="", sums=sums
    )
    assert [m.object for m in other.mismatched] == ["old.tar.gz"] and not other.confirmed
    aged = listed("old.tar.gz.age", "1" * 64, encrypted=True)
    sealed = split([archive], [aged], suffix=".age", sums=sums)
    assert (sealed.confirmed, sealed.pending, sealed.waiting) == ({}, [archive], 1)
