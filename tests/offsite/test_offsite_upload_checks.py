"""What the upload job checks of each archive before sending it (outside attack, issue 15): an
archive whose name cannot be an object is refused on its own while the others are uploaded;
a rotten archive is read again, never uploaded, and marked damaged. In process on a file://
store (real backups, the real uploader), then through a real daemon against SeaweedFS."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from backup_sidecar import archiver, jobs
from backup_sidecar.offsite import Store, parse_target
from backup_sidecar.service.live import Configured, LiveConfig
from backup_sidecar.service.metric_families import MetricFamilies
from backup_sidecar.service.offsite import OffsiteUploader
from backup_sidecar.settings import load_settings, resolve_paths
from support.archives import flip_database_byte
from support.daemon import DaemonRunner, quiet_config
from support.databases import make_db
from support.metrics import sample
from support.offsite import fast_retry, s3_store
from support.seaweed import SeaweedServer
from support.waiting import wait_until

ODD_NAMES = ("-x1.tar.gz", "sp ace.tar.gz")


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


def _uploader(configured: Configured, registry: CollectorRegistry) -> OffsiteUploader:
    return OffsiteUploader(
        live=LiveConfig(configured),
        families=MetricFamilies(registry, version="test", clock=lambda: datetime.now(UTC)),
        catalog=archiver.Catalog(configured.runtime.backup_dir),
        environ={},
    )


def _confirmed(url: str) -> set[str]:
    return {o.name for o in Store(parse_target(url)).list().objects if o.confirmed}


def _failures(registry: CollectorRegistry, reason: str) -> float:
    value = registry.get_sample_value("backup_sidecar_offsite_failures_total", {"reason": reason})
    return value or 0.0


def _rename_to_odd_names(rt: jobs.Runtime) -> None:
    """A real backup under each of ``ODD_NAMES``, renamed there (`x1`, `space` in metadata)."""
    for odd in ODD_NAMES:
        made = odd.strip("-").replace(" ", "").removesuffix(".tar.gz")
        jobs.run_backup(rt, policy="manual", names=None, archive_name=made)
        (rt.backup_dir / f"{made}.tar.gz").rename(rt.backup_dir / odd)


def test_an_odd_archive_name_is_refused_alone_and_the_others_are_uploaded(
    tmp_path: Path,
) -> None:
    """Real archives renamed `-x1.tar.gz` and `sp ace.tar.gz` (they list as verified): each
    pass uploads the other archives, the newest included, and counts each odd one as reason
    `name`; each is logged once however many passes see it; the pass reports the refusal as
    its error. Renamed back, it is uploaded at the next pass and the error clears. (The whole
    pass failed with `invalid object name`, nothing after it sent.)"""
    configured, url = _site(tmp_path)
    rt = configured.runtime
    jobs.run_backup(rt, policy="manual", names=None, archive_name="base")
    _rename_to_odd_names(rt)
    jobs.run_backup(rt, policy="manual", names=None, archive_name="later")
    statuses = {a.path.name: a.status for a in archiver.list_archives(rt.backup_dir)}
    assert {statuses[odd] for odd in ODD_NAMES} == {archiver.ArchiveStatus.VERIFIED}
    registry = CollectorRegistry()
    uploader = _uploader(configured, registry)
    with capture_logs() as logs:
        assert uploader.sync() == 2
        assert uploader.sync() == 0
    assert _confirmed(url) == {"base.tar.gz", "later.tar.gz"}
    assert _failures(registry, "name") == 4  # two names, two passes
    refused = [e for e in logs if e["event"] == "offsite_upload_refused"]
    assert sorted(e["archive"] for e in refused) == sorted(ODD_NAMES)
    assert "is not a valid archive name" in refused[0]["reason"]
    assert uploader.state.snapshot().last_error in {e["reason"] for e in refused}
    assert registry.get_sample_value("backup_sidecar_offsite_pending_archives") == 2

    (rt.backup_dir / "-x1.tar.gz").rename(rt.backup_dir / "x1.tar.gz")
    (rt.backup_dir / "sp ace.tar.gz").unlink()
    assert uploader.sync() == 1
    assert _confirmed(url) == {"base.tar.gz", "later.tar.gz", "x1.tar.gz"}
    assert uploader.state.snapshot().last_error is None
    assert _failures(registry, "name") == 4


def test_a_rotten_archive_is_never_uploaded_and_is_marked_damaged(tmp_path: Path) -> None:
    """One byte of a database member flipped on disk, the file's size and times put back (bit
    rot: `list` still says verified): the pass reads it to the end while sending it and
    never writes its record (the object is deleted at once), uploads the sound archive,
    writes the scrub's damage
    marker (found by the offsite upload) and counts reason `damaged` once; the archive is no
    longer pending, so the next pass neither counts nor reads it again."""
    configured, url = _site(tmp_path)
    rt = configured.runtime
    jobs.run_backup(rt, policy="manual", names=None, archive_name="rotten")
    jobs.run_backup(rt, policy="manual", names=None, archive_name="sound")
    rotten = rt.backup_dir / "rotten.tar.gz"
    before = rotten.stat()
    flip_database_byte(rotten)
    os.utime(rotten, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert rotten.stat().st_size == before.st_size
    registry = CollectorRegistry()
    uploader = _uploader(configured, registry)
    assert uploader.sync() == 1
    assert _confirmed(url) == {"sound.tar.gz"}
    stored = Store(parse_target(url)).list()
    assert [o.name for o in stored.objects] == ["sound.tar.gz"]  # the rotten one deleted
    assert stored.problems == ()
    marker = json.loads((rt.backup_dir / "rotten.tar.gz.damaged").read_text())
    assert marker["found_by"] == "offsite upload"
    assert _failures(registry, "damaged") == 1
    listed = {a.name: a for a in archiver.list_archives(rt.backup_dir)}
    assert listed["rotten"].status is archiver.ArchiveStatus.DAMAGED
    assert "marked damaged by offsite upload" in (listed["rotten"].error or "")
    assert "rotten" in (uploader.state.snapshot().last_error or "")
    assert uploader.sync() == 0
    assert _failures(registry, "damaged") == 1
    assert registry.get_sample_value("backup_sidecar_offsite_pending_archives") == 0
    assert uploader.state.snapshot().last_error is None
    assert _confirmed(url) == {"sound.tar.gz"}


def test_an_archive_overwritten_with_another_backups_bytes_is_not_uploaded_under_its_name(
    tmp_path: Path,
) -> None:
    """`cat older > newer` with newer's times put back, before the upload (outside attack,
    issue 15): the file lists as verified but as a copy of `older` (its metadata names it), and
    `verify` says so; the pass uploads `older` under its own name and never `newer.tar.gz`
    (it was uploaded, confirmed, and restored by name as the newer backup). With `older`'s own
    file gone, the copy is refused as reason `copy`, saying to rename it back; renamed back, it
    is uploaded under that name and the error clears."""
    configured, url = _site(tmp_path)
    rt = configured.runtime
    jobs.run_backup(rt, policy="manual", names=None, archive_name="older")
    jobs.run_backup(rt, policy="manual", names=None, archive_name="newer")
    older, newer = rt.backup_dir / "older.tar.gz", rt.backup_dir / "newer.tar.gz"
    before = newer.stat()
    newer.write_bytes(older.read_bytes())
    os.utime(newer, ns=(before.st_atime_ns, before.st_mtime_ns))
    listed = {a.name: a for a in archiver.list_archives(rt.backup_dir)}
    assert listed["newer"].status is archiver.ArchiveStatus.VERIFIED
    assert jobs.archive_json(listed["newer"])["copy_of"] == "older"
    assert jobs.archive_json(listed["older"])["copy_of"] is None
    warnings = jobs.run_verify(rt, "newer")["warnings"]
    assert any("holds backup 'older'" in w for w in warnings), warnings
    registry = CollectorRegistry()
    uploader = _uploader(configured, registry)
    assert uploader.sync() == 1
    assert _confirmed(url) == {"older.tar.gz"}
    assert uploader.state.snapshot().last_error is None
    assert registry.get_sample_value("backup_sidecar_offsite_pending_archives") == 0

    older.unlink()  # the copy is all that is left of that backup
    with capture_logs() as logs:
        assert uploader.sync() == 0
    [refused] = [e for e in logs if e["event"] == "offsite_upload_refused"]
    assert refused["archive"] == "newer.tar.gz"
    assert "metadata names backup 'older'" in refused["reason"]
    assert "rename it back to older.tar.gz" in refused["reason"]
    assert _failures(registry, "copy") == 1
    assert uploader.state.snapshot().last_error == refused["reason"]
    assert _confirmed(url) == {"older.tar.gz"}

    newer.rename(older)
    uploader.sync()
    assert _confirmed(url) == {"older.tar.gz"}
    assert uploader.state.snapshot().last_error is None
    assert registry.get_sample_value("backup_sidecar_offsite_pending_archives") == 0


def test_a_directory_planted_at_an_object_key_refuses_that_archive_alone(
    tmp_path: Path,
) -> None:
    """A directory made at an older archive's object key in a file:// store (outside attack,
    issue 15): the pass uploads the newer archive, refuses the older one alone as reason
    `unsafe` naming it (logged once over two passes; it stays pending); once the directory
    is gone it is uploaded. Before, every pass failed with `... is a directory` and nothing
    after it was sent."""
    configured, url = _site(tmp_path)
    rt = configured.runtime
    jobs.run_backup(rt, policy="manual", names=None, archive_name="older")
    jobs.run_backup(rt, policy="manual", names=None, archive_name="newer")
    planted = Path(url.removeprefix("file://")) / "older.tar.gz"
    planted.mkdir(parents=True)
    registry = CollectorRegistry()
    uploader = _uploader(configured, registry)
    with capture_logs() as logs:
        uploader.sync()
        uploader.sync()
    assert _confirmed(url) == {"newer.tar.gz"}
    [refused] = [e for e in logs if e["event"] == "offsite_upload_refused"]
    assert refused["archive"] == "older.tar.gz" and "is a directory" in refused["reason"]
    assert _failures(registry, "unsafe") == 2
    assert "older" in (uploader.state.snapshot().last_error or "")
    assert registry.get_sample_value("backup_sidecar_offsite_pending_archives") == 1
    planted.rmdir()
    assert uploader.sync() == 1
    assert _confirmed(url) == {"newer.tar.gz", "older.tar.gz"}
    assert uploader.state.snapshot().last_error is None


def test_a_daemon_uploads_past_odd_names_and_rot(
    daemons: DaemonRunner,
    tmp_path: Path,
    sock_dir: Path,
    seaweed: SeaweedServer,
    shared_bucket: str,
) -> None:
    """The attack through a real daemon on SeaweedFS: archives made before it starts, two
    renamed to odd names and one rotten. Its first passes upload the sound archives, log
    each odd name once, mark the rotten one damaged; /metrics counts `name` and `damaged`;
    `offsite_status` names the refusal; the odd one renamed back is uploaded after the next
    backup, and the error clears."""
    configured, _ = _site(tmp_path)
    rt = configured.runtime
    for name in ("first", "rotten", "second"):
        jobs.run_backup(rt, policy="manual", names=None, archive_name=name)
    _rename_to_odd_names(rt)
    flip_database_byte(rt.backup_dir / "rotten.tar.gz")
    prefix = f"checks-{tmp_path.name}"
    offsite: dict[str, Any] = {
        "url": f"s3://{shared_bucket}/{prefix}",
        "endpoint": seaweed.endpoint,
        "path_style": True,
        "attempts": 5,
    }
    config = quiet_config(
        backup_dir=rt.backup_dir,
        databases={"user": tmp_path / "data" / "user_data.db"},
        socket_path=sock_dir / "control.sock",
        metrics={"enabled": True, "host": "127.0.0.1", "port": 0},
        offsite=offsite,
    )
    d = daemons.start(config, env=seaweed.env())
    store = s3_store(seaweed, shared_bucket, prefix, retry=fast_retry())

    def confirmed() -> set[str]:
        return {o.name for o in store.list().objects if o.confirmed}

    wait_until(
        lambda: confirmed() == {"first.tar.gz", "second.tar.gz"},
        what="the sound archives confirmed offsite",
        timeout=120,
    )
    wait_until(
        lambda: (sample(d.scrape(), "backup_sidecar_offsite_failures_total", reason="damaged")
                 or 0) == 1,
        what="the rotten archive counted damaged",
        timeout=120,
    )  # fmt: skip
    assert (rt.backup_dir / "rotten.tar.gz.damaged").is_file()
    assert (sample(d.scrape(), "backup_sidecar_offsite_failures_total", reason="name") or 0) >= 2
    wait_until(
        lambda: "not uploaded" in (d.request("offsite_status")["last_error"] or ""),
        what="offsite_status naming a refusal",
        timeout=120,
    )

    (rt.backup_dir / "-x1.tar.gz").rename(rt.backup_dir / "x1.tar.gz")
    (rt.backup_dir / "sp ace.tar.gz").unlink()
    newest = d.request("backup")["archive"]
    wanted = {"first.tar.gz", "second.tar.gz", "x1.tar.gz", f"{newest}.tar.gz"}
    wait_until(
        lambda: confirmed() == wanted,
        what="the renamed copy and the new backup uploaded",
        timeout=120,
    )
    wait_until(
        lambda: d.request("offsite_status")["last_error"] is None,
        what="the error cleared",
        timeout=120,
    )
    assert sorted(e["archive"] for e in d.log.find("offsite_upload_refused")) == sorted(ODD_NAMES)
    assert "rotten.tar.gz" not in confirmed()
