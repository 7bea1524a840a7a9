"""Killed mid-upload: the S3 server (SIGKILL, then restarted) or the uploading sidecar itself
(kill -9). Nothing counts as offsite, the next upload completes, and no unfinished upload
(S3 multipart parts, a file:// store's staging file) stays behind."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backup_sidecar.offsite import Confirmation, Lease, Store, Uploaded
from support.offsite import archive_file, fast_retry, new_bucket, s3_store, sidecar
from support.seaweed import SeaweedServer

MiB = 1024 * 1024
NAME = "app-daily-20261207T080000Z.tar.gz"


@pytest.fixture
def revived(seaweed: SeaweedServer) -> Iterator[SeaweedServer]:
    """The session's server, which this test kills: it is running again afterwards."""
    try:
        yield seaweed
    finally:
        if seaweed.process is None:
            seaweed.start()


def poll(condition: Callable[[], bool], what: str, *, timeout: float) -> None:
    """Poll ``condition`` until true; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:g}s")
        time.sleep(0.005)


def parts_in(server: SeaweedServer, bucket: str, at_least: int) -> bool:
    """Whether an unfinished multipart upload in ``bucket`` holds ``at_least`` parts."""
    client = server.client()
    for upload in server.pending_uploads(bucket):
        parts = client.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        if len(parts.get("Parts", [])) >= at_least:
            return True
    return False


def test_server_killed_mid_upload_then_retry_completes_without_orphans(
    revived: SeaweedServer, tmp_path: Path
) -> None:
    """Kill the server once two parts of a 64 MiB upload are in; the store's next attempt
    (after the backoff, during which the server restarts) uploads it whole; before that
    attempt nothing is confirmed; afterwards no multipart upload is left unfinished."""
    server = revived
    bucket = new_bucket(server)
    source = archive_file(tmp_path, NAME, 64 * MiB)
    seen_before_retry: list[Confirmation] = []
    store: Store | None = None

    def backoff(_seconds: float) -> None:  # the injected sleep: the server comes back meanwhile
        assert store is not None
        if server.process is None:
            server.start()
            seen_before_retry.append(store.confirm(NAME))

    store = s3_store(
        server,
        bucket,
        "site-k",
        retry=fast_retry(attempts=3, sleep=backoff),
        part_size=5 * MiB,
        max_concurrency=2,
    )
    lease = Lease(store)
    assert lease.acquire().writable
    result: list[Uploaded | BaseException] = []

    def upload() -> None:
        assert store is not None
        try:
            result.append(store.upload(source, lease=lease))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            result.append(exc)

    worker = threading.Thread(target=upload)
    worker.start()
    poll(lambda: parts_in(server, bucket, 2), "two uploaded parts", timeout=60)
    server.kill()
    worker.join(timeout=180)
    assert not worker.is_alive()
    assert len(seen_before_retry) == 1, f"the upload was not interrupted: {result}"
    assert not seen_before_retry[0].confirmed
    assert isinstance(result[0], Uploaded), result[0]
    assert result[0].attempts == 2
    assert store.confirm(NAME, deep=True).confirmed
    assert server.pending_uploads(bucket) == []
    out = tmp_path / "back"
    store.download(NAME, out)
    assert out.read_bytes() == source.read_bytes()


def test_abort_orphaned_uploads_clears_what_a_dead_process_left(
    seaweed: SeaweedServer,
) -> None:
    """Unfinished uploads under the prefix (a sidecar killed mid-upload leaves them) are
    aborted by abort_orphaned_uploads; another prefix's are left alone."""
    bucket = new_bucket(seaweed)
    client = seaweed.client()
    for key in ("site-o/a.tar.gz", "site-o/b.tar.gz", "other/c.tar.gz"):
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x")
    store = s3_store(seaweed, bucket, "site-o", retry=fast_retry())
    lease = Lease(store)
    assert lease.acquire().writable
    assert store.abort_orphaned_uploads(lease=lease) == 2
    assert [u["Key"] for u in seaweed.pending_uploads(bucket)] == ["other/c.tar.gz"]
    assert store.abort_orphaned_uploads(lease=lease) == 0


def test_upload_of_one_name_leaves_its_age_twins_upload_alone(
    seaweed: SeaweedServer, tmp_path: Path
) -> None:
    """Uploading NAME clears NAME's own unfinished uploads only, never those of a longer key
    such as NAME.age (another upload in progress)."""
    bucket = new_bucket(seaweed)
    client = seaweed.client()
    for key in (f"site-t/{NAME}", f"site-t/{NAME}.age"):
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x")
    store = s3_store(seaweed, bucket, "site-t", retry=fast_retry())
    lease = Lease(store)
    assert lease.acquire().writable
    source = archive_file(tmp_path, NAME, 4096)
    assert store.upload(source, lease=lease).size == 4096
    assert [u["Key"] for u in seaweed.pending_uploads(bucket)] == [f"site-t/{NAME}.age"]


def unfinished(store: Store, root: Path, server: SeaweedServer | None) -> list[str]:
    """What the backend holds of unfinished uploads: S3 multipart uploads under the store's
    bucket, or staging files (``KEY#N``) under a file:// root."""
    if server is None:
        return sorted(p.name for p in root.rglob("*#*"))
    return [u["Key"] for u in server.pending_uploads(store.target.bucket)]


def test_uploader_killed_leaves_nothing_confirmed_and_the_next_one_cleans_up(
    make_store: Callable[..., Store], backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """kill -9 a sidecar process three parts into a 48 MiB upload: the object is not offsite
    (not confirmed, not listed as confirmed), the unfinished upload is there; the next
    sidecar is read-only until the dead one's lease runs out, then its
    abort_orphaned_uploads clears the leftover and its own upload is confirmed and whole."""
    store = make_store(part_size=5 * MiB)
    server: SeaweedServer | None = request.getfixturevalue("seaweed") if backend == "s3" else None
    root = tmp_path / "offsite"
    source = archive_file(tmp_path, NAME, 48 * MiB, seed=7)
    with sidecar(store, server, source, stall_after=15 * MiB, lease_ttl=1) as child:
        assert child.says() == "holding"
        assert child.says() == "stalled"
        if server is None:
            poll(
                lambda: any(p.stat().st_size >= 10 * MiB for p in root.rglob("*#*")),
                "a 10 MiB staging file",
                timeout=60,
            )
        else:
            poll(lambda: parts_in(server, store.target.bucket, 2), "two parts", timeout=60)
        child.kill()
    assert not store.confirm(NAME).confirmed
    assert [o.name for o in store.list().objects if o.confirmed] == []
    assert len(unfinished(store, root, server)) == 1
    lease = Lease(store, ttl=300)
    first = lease.acquire()
    assert not first.writable and f"pid {child.pid} " in first.message
    poll(lambda: lease.acquire().writable, "the dead sidecar's lease expiring", timeout=30)
    assert store.abort_orphaned_uploads(lease=lease) == 1
    assert unfinished(store, root, server) == []
    uploaded = store.upload(source, lease=lease)
    assert uploaded.attempts == 1 and uploaded.size == 48 * MiB
    assert store.confirm(NAME, deep=True).confirmed
    assert unfinished(store, root, server) == []
