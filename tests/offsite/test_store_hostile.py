"""The offsite Store against entries planted by someone else (outside attack on issue 15):
links and odd names in a file:// store, a file:// URL that is a file, a plaintext object in
an encrypted store, and the source checksum that tells another sidecar's same-named upload."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from pyrage import x25519

from backup_sidecar.errors import (
    OffsitePlaintextError,
    OffsiteUnsafeEntryError,
    OffsiteUrlError,
)
from backup_sidecar.offsite import Lease, Store, parse_recipients, parse_target
from backup_sidecar.offsite.record import Record, parse_record
from support.offsite import archive_file, fast_retry

NAME = "app-daily-20261207T070000Z.tar.gz"


@pytest.fixture
def local(tmp_path: Path) -> Path:
    path = tmp_path / "local"
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the store that nothing may read or write through a link."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret.tar.gz").write_bytes(b"not for the store")
    return path


def file_store(tmp_path: Path) -> Store:
    return Store(parse_target(f"file://{tmp_path / 'offsite'}"), retry=fast_retry())


def forged_record(name: str, data: bytes, etag: str | None) -> bytes:
    digest = hashlib.sha256(data).hexdigest()
    return Record(name, len(data), digest, etag, False, len(data)).to_json()


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def test_linked_object_is_a_problem_and_never_read(
    tmp_path: Path, local: Path, outside: Path
) -> None:
    """A link planted as an object (with a record vouching for the target's bytes) and a link
    to a directory are listing problems; the good object stays confirmed; downloading the
    linked one is one error naming it, and nothing is written."""
    store = file_store(tmp_path)
    lease = Lease(store, ttl=300)
    assert lease.acquire().writable
    store.upload(archive_file(local, NAME, 4096), lease=lease)
    root = tmp_path / "offsite"
    (root / "evil.tar.gz").symlink_to(outside / "secret.tar.gz")
    secret = (outside / "secret.tar.gz").read_bytes()
    (root / ".offsite/sums/evil.tar.gz.json").write_bytes(
        forged_record("evil.tar.gz", secret, None)
    )
    (root / "sub").symlink_to(outside)
    listing = store.list()
    assert [(o.name, o.confirmed) for o in listing.objects] == [(NAME, True)]
    problems = {p.key: p.reason for p in listing.problems}
    assert "symbolic link" in problems["evil.tar.gz"]
    assert "symbolic link" in problems["sub"]
    with pytest.raises(OffsiteUnsafeEntryError, match=r"evil\.tar\.gz is a symbolic link"):
        store.download("evil.tar.gz", local / "out.tar.gz")
    assert not (local / "out.tar.gz").exists()
    with pytest.raises(OffsiteUnsafeEntryError):
        store.confirm("evil.tar.gz")


@pytest.mark.parametrize("linked", [".offsite", ".offsite/sums"])
def test_linked_record_directory_refuses_upload_and_reads(
    tmp_path: Path, local: Path, outside: Path, linked: str
) -> None:
    """A record directory (or ``.offsite`` itself) replaced by a link to a directory outside:
    an upload is refused naming it before any byte goes out, a download of an object whose
    forged record sits outside is refused, and nothing outside is written."""
    store = file_store(tmp_path)
    lease = Lease(store, ttl=300)
    assert lease.acquire().writable
    root = tmp_path / "offsite"
    (root / ".offsite/sums").mkdir(parents=True, exist_ok=True)
    target = outside / "dir"
    (root / linked).rename(target)
    (root / linked).symlink_to(target)
    plain = b"planted plaintext"
    (root / "planted.tar.gz").write_bytes(plain)
    sums = outside / "dir" / ("sums" if linked == ".offsite" else "")
    (sums / "planted.tar.gz.json").write_bytes(forged_record("planted.tar.gz", plain, None))
    before = snapshot(outside)
    with pytest.raises(OffsiteUnsafeEntryError, match=f"{linked} is a symbolic link"):
        store.upload(archive_file(local, NAME, 4096), lease=lease)
    with pytest.raises(OffsiteUnsafeEntryError, match=f"{linked} is a symbolic link"):
        store.download("planted.tar.gz", local / "out.tar.gz")
    assert not (local / "out.tar.gz").exists()
    assert not (root / NAME).exists()
    assert snapshot(outside) == before
    listing = store.list()
    assert any(p.key == linked and "symbolic link" in p.reason for p in listing.problems)
    assert not any(o.confirmed for o in listing.objects)


def test_linked_lease_directory_refuses_the_lease(tmp_path: Path, outside: Path) -> None:
    """``.offsite/lease`` replaced by a link: taking the lease is one error naming it, and no
    lease generation is written outside."""
    store = file_store(tmp_path)
    root = tmp_path / "offsite"
    (root / ".offsite").mkdir(parents=True)
    (root / ".offsite/lease").symlink_to(outside)
    before = snapshot(outside)
    with pytest.raises(OffsiteUnsafeEntryError, match=r"\.offsite/lease is a symbolic link"):
        Lease(store, ttl=300).acquire()
    assert snapshot(outside) == before


def test_clearing_unfinished_uploads_never_enters_a_link(tmp_path: Path, outside: Path) -> None:
    """``abort_orphaned_uploads`` removes a killed writer's staging file in the store, and
    leaves one in a directory a planted link points to (and a linked staging name) alone."""
    store = file_store(tmp_path)
    lease = Lease(store, ttl=300)
    assert lease.acquire().writable
    root = tmp_path / "offsite"
    (root / "left.tar.gz#7").write_bytes(b"half an upload")
    (outside / "theirs.tar.gz#3").write_bytes(b"someone else's")
    (root / "sub").symlink_to(outside)
    (root / "linked.tar.gz#4").symlink_to(outside / "theirs.tar.gz#3")
    assert store.abort_orphaned_uploads(lease=lease) == 1
    assert not (root / "left.tar.gz#7").exists()
    assert (outside / "theirs.tar.gz#3").read_bytes() == b"someone else's"
    assert (root / "linked.tar.gz#4").is_symlink()


def test_non_utf8_name_and_link_loop_are_problems_not_failures(tmp_path: Path, local: Path) -> None:
    """A name that is not UTF-8 and a symbolic link loop (in the root and under ``.offsite``)
    are one problem each; the good object is listed confirmed, downloads by name, and a new
    upload still works."""
    store = file_store(tmp_path)
    lease = Lease(store, ttl=300)
    assert lease.acquire().writable
    store.upload(archive_file(local, NAME, 4096), lease=lease)
    root = tmp_path / "offsite"
    (Path(os.fsdecode(bytes(root) + b"/bad-\xff.tar.gz"))).write_bytes(b"x")
    (root / "loop").symlink_to(root / "loop")
    (root / ".offsite/sums/loop.json").symlink_to(root / ".offsite/sums/loop.json")
    listing = store.list()
    assert [(o.name, o.confirmed) for o in listing.objects] == [(NAME, True)]
    problems = {p.key: p.reason for p in listing.problems}
    assert problems["bad-\\xff.tar.gz"] == "the name is not UTF-8"
    assert "symbolic link" in problems["loop"]
    assert "symbolic link" in problems[".offsite/sums/loop.json"]
    got = store.download(NAME, local / "back.tar.gz")
    assert got.sha256 == hashlib.sha256((root / NAME).read_bytes()).hexdigest()
    store.upload(archive_file(local, "second.tar.gz", 2048), lease=lease)
    assert store.confirm("second.tar.gz").confirmed


def test_file_url_on_a_regular_file_is_one_error_naming_it(tmp_path: Path) -> None:
    """A file:// URL whose path is a regular file: one OffsiteUrlError naming the path (not
    a bare ``File exists (os error 17)``), and the file is untouched."""
    path = tmp_path / "plain"
    path.write_bytes(b"a file, not a store")
    with pytest.raises(OffsiteUrlError, match=f"{path} exists and is not a directory"):
        Store.from_url(f"file://{path}")
    assert path.read_bytes() == b"a file, not a store"


def test_encrypted_store_refuses_a_plaintext_object(
    lease: Lease, store: Store, local: Path
) -> None:
    """A plaintext object with a valid record (anyone who can write to the store can make
    one) in a store the config encrypts to: listed unconfirmed with the reason, and refused
    for download in one line, nothing written; without the flag it is an ordinary object."""
    store.upload(archive_file(local, NAME, 4096), lease=lease)
    listed = store.list(encrypted_only=True).objects
    assert [(o.name, o.confirmed) for o in listed] == [(NAME, False)]
    assert "plaintext" in listed[0].reason
    with pytest.raises(OffsitePlaintextError, match=r"offsite\.encryption\.recipients"):
        store.download(NAME, local / "out.tar.gz", encrypted_only=True)
    assert not (local / "out.tar.gz").exists()
    assert store.list().objects[0].confirmed


@pytest.mark.parametrize("encrypt", [False, True])
def test_record_holds_the_source_checksum(
    lease: Lease, store: Store, local: Path, encrypt: bool, make_store: Callable[..., Store]
) -> None:
    """The record of an upload (plain or age) holds the SHA-256 and size of the local archive,
    hashed while streaming; a record written before that field existed still parses."""
    path = archive_file(local, NAME, 3 * 4096 + 7)
    recipients = parse_recipients([str(x25519.Identity.generate().to_public())]) if encrypt else ()
    up = store.upload(path, lease=lease, recipients=recipients)
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert up.source_sha256 == expected
    record = store.read_record(up.name)
    assert record is not None
    assert (record.source_sha256, record.source_size) == (expected, path.stat().st_size)
    assert (record.sha256 == expected) is not encrypt
    old = record.to_json().replace(f', "source_sha256": "{expected}"'.encode(), b"")
    assert b"source_sha256" not in old
    assert parse_record(up.name, old).source_sha256 is None
