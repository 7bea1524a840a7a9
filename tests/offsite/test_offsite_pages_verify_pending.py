"""The scheduled offsite verify and incremental backups still going up (outside attack on issue
16, item 6): a backup whose upload is under way (one database's manifest not offsite yet) is
pending, not `corrupt`; and a verify that found something wrong runs again when an upload pass
confirms new copies (or after a backoff well below `verify_every`), so its /healthz reason
clears when its cause goes. The real in-process uploader and verifier, file:// store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry

from backup_sidecar import jobs
from backup_sidecar.jobs.outcomes import OffsiteVerifyFinished, Outcome, Outcomes
from backup_sidecar.service.live import LiveConfig
from backup_sidecar.service.metric_families import MetricFamilies
from backup_sidecar.service.offsite_verify import OffsiteVerifier, next_delay
from support.databases import make_db
from support.offsite_pages import Site, incremental_site, offsite_place
from support.waiting import wait_until


def _site(tmp_path: Path) -> tuple[Site, Path, dict[str, str]]:
    """Two databases, policy `hourly` (incremental), offsite `verify_every: 1d`."""
    section, environ, _ = offsite_place("file", tmp_path)
    dbs = {
        "user": make_db(tmp_path / "data" / "user.db", wal=True, rows=80, tag="user"),
        "audit": make_db(tmp_path / "data" / "audit.db", wal=False, rows=40, tag="audit"),
    }
    site = incremental_site(
        tmp_path, dbs, offsite={**section, "verify_every": "1d"}, environ=environ
    )
    return site, tmp_path / "offsite", environ


def _verifier(site: Site, environ: dict[str, str], outcomes: Outcomes) -> OffsiteVerifier:
    families = MetricFamilies(CollectorRegistry(), version="test", clock=lambda: datetime.now(UTC))
    return OffsiteVerifier(
        live=LiveConfig(site.configured), families=families, environ=environ, outcomes=outcomes
    )


def _backup(site: Site, name: str) -> str:
    return jobs.run_backup(site.rt, policy="hourly", archive_name=name).name


def test_a_backup_whose_upload_is_under_way_is_pending_not_corrupt(tmp_path: Path) -> None:
    """Two backups uploaded, then the newer one's `audit` manifest (object and record) taken
    away, as while its upload is still running: the verify checks the older, complete backup
    and passes (no `corrupt`, no problem for /healthz); once the uploader sends the missing
    manifest, the verify checks the newer backup and passes."""
    site, root, environ = _site(tmp_path)
    older = _backup(site, "hourly_20261207_010000")
    assert site.uploader.sync() == 1
    newer = _backup(site, "hourly_20261207_020000")
    assert site.uploader.sync() == 1
    gone = [p for p in root.rglob(f"{newer}.json*") if "audit" in p.parts]
    assert len(gone) == 2  # the manifest object and its checksum record
    for path in gone:
        path.unlink()
    verifier = _verifier(site, environ, Outcomes())

    assert verifier.run_once() == 1
    assert verifier.problems() == []
    assert site.metric("backup_sidecar_offsite_verify_failures_total", reason="corrupt") is None
    assert older != newer

    assert site.uploader.sync() == 1  # the missing manifest goes up
    assert verifier.run_once() == 1
    assert verifier.problems() == []


def test_a_failed_verify_runs_again_when_new_copies_are_confirmed(tmp_path: Path) -> None:
    """`verify_every: 1d`: the newest backup's `user` manifest object damaged in the store, the
    verify fails naming it (a problem for /healthz). The verifier thread is running (its next
    verify a day away, the first at 5 min); a new backup is uploaded by the uploader's pass:
    the verify runs again at once, passes on the new backup, and publishes no problem."""
    site, root, environ = _site(tmp_path)
    _backup(site, "hourly_20261207_010000")
    assert site.uploader.sync() == 1
    damaged = _backup(site, "hourly_20261207_020000")
    assert site.uploader.sync() == 1
    [manifest] = list((root / "pages" / "user" / "manifests").glob(f"{damaged}.json*"))
    data = bytearray(manifest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    manifest.write_bytes(bytes(data))
    published: list[Outcome] = []
    outcomes = Outcomes()
    outcomes.subscribe(published.append)
    verifier = _verifier(site, environ, outcomes)
    assert verifier.run_once() == 0
    [problem] = verifier.problems()
    assert damaged in problem

    site.uploader.verifier = verifier
    verifier.start()
    try:
        _backup(site, "hourly_20261207_030000")
        assert site.uploader.sync() >= 1
        wait_until(
            lambda: OffsiteVerifyFinished(()) in published,
            timeout=60,
            what="a verify after the upload pass, with no problem",
        )
        assert verifier.problems() == []
    finally:
        site.uploader.verifier = None
        verifier.stop()


def test_a_failed_verify_is_retried_after_a_backoff_well_below_verify_every() -> None:
    """The delay to the next verify: `verify_every` while all is well; after failures in a
    row 1 min, 2 min, 4 min ... at most 1 h, never later than `verify_every`."""
    day = 86400.0
    assert next_delay(day, 0) == day
    assert [next_delay(day, n) for n in (1, 2, 3)] == [60.0, 120.0, 240.0]
    assert next_delay(day, 7) == 3600.0
    assert next_delay(day, 500) == 3600.0
    assert next_delay(30.0, 3) == 30.0
    assert next_delay(None, 0) == 60.0
