"""The S3 server killed (SIGKILL) in the middle of a multipart upload: nothing counts as
offsite, the retry after the restart completes, and no unfinished upload stays behind."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from offsite_support import archive_file, fast_retry, new_bucket, s3_store
from seaweed_server import SeaweedServer

from backup_sidecar.offsite import Confirmation, Store, Uploaded

MiB = 1024 * 1024
NAME = "app-daily-20261207T080000Z.tar.gz"


@pytest.fixture
def own_seaweed(tmp_path: Path) -> Iterator[SeaweedServer]:
    """A server of this test's own: it gets killed."""
    server = SeaweedServer(tmp_path / "weed")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wait_for_parts(server: SeaweedServer, bucket: str, *, timeout: float) -> None:
    """Poll until an unfinished multipart upload in the bucket holds at least two parts."""
    client = server.client()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for upload in server.pending_uploads(bucket):
            parts = client.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            if len(parts.get("Parts", [])) >= 2:
                return
        time.sleep(0.005)
    pytest.fail("no multipart upload with two parts appeared")


def test_killed_mid_upload_then_retry_completes_without_orphans(
    own_seaweed: SeaweedServer, tmp_path: Path
) -> None:
    """Kill the server once two parts of a 96 MiB upload are in; the store's next attempt
    (after the backoff, during which the server restarts) uploads it whole; before that
    attempt nothing is confirmed; afterwards no multipart upload is left unfinished."""
    bucket = new_bucket(own_seaweed)
    source = archive_file(tmp_path, NAME, 96 * MiB)
    seen_before_retry: list[Confirmation] = []
    store: Store | None = None

    def backoff(_seconds: float) -> None:  # the injected sleep: the server comes back meanwhile
        assert store is not None
        if own_seaweed.process is None:
            own_seaweed.start()
            seen_before_retry.append(store.confirm(NAME))

    store = s3_store(
        own_seaweed,
        bucket,
        "site-k",
        retry=fast_retry(attempts=3, sleep=backoff),
        part_size=5 * MiB,
        max_concurrency=2,
    )
    result: list[Uploaded | BaseException] = []

    def upload() -> None:
        assert store is not None
        try:
            result.append(store.upload(source))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            result.append(exc)

    worker = threading.Thread(target=upload)
    worker.start()
    wait_for_parts(own_seaweed, bucket, timeout=60)
    own_seaweed.kill()
    worker.join(timeout=180)
    assert not worker.is_alive()
    assert len(seen_before_retry) == 1, f"the upload was not interrupted: {result}"
    assert not seen_before_retry[0].confirmed
    assert isinstance(result[0], Uploaded), result[0]
    assert result[0].attempts == 2
    assert store.confirm(NAME, deep=True).confirmed
    assert own_seaweed.pending_uploads(bucket) == []
    out = tmp_path / "back"
    store.download(NAME, out)
    assert out.read_bytes() == source.read_bytes()


def test_abort_orphaned_uploads_clears_what_a_dead_process_left(
    own_seaweed: SeaweedServer, tmp_path: Path
) -> None:
    """Unfinished uploads under the prefix (a sidecar killed mid-upload leaves them) are
    aborted by abort_orphaned_uploads; another prefix's are left alone."""
    bucket = new_bucket(own_seaweed)
    client = own_seaweed.client()
    for key in ("site-o/a.tar.gz", "site-o/b.tar.gz", "other/c.tar.gz"):
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x")
    store = s3_store(own_seaweed, bucket, "site-o", retry=fast_retry())
    assert store.abort_orphaned_uploads() == 2
    assert [u["Key"] for u in own_seaweed.pending_uploads(bucket)] == ["other/c.tar.gz"]
    assert store.abort_orphaned_uploads() == 0
