"""The offsite Store against a real SeaweedFS and a file:// directory: round trips, the
checksum record, refusals of damaged objects, tolerant listing, delete, retries."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import obstore
import pyrage
import pytest
from pyrage import x25519

from backup_sidecar.errors import (
    ArchiveExistsError,
    OffsiteDecryptError,
    OffsiteKeyError,
    OffsiteObjectCorruptError,
    OffsiteObjectNotFoundError,
    OffsiteUnavailableError,
)
from backup_sidecar.offsite import Lease, Store, load_identities, parse_recipients, parse_target
from backup_sidecar.offsite.record import Record, parse_record
from support.offsite import archive_file, fast_retry

MiB = 1024 * 1024
NAME = "app-daily-20261207T070000Z.tar.gz"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def raw_get(store: Store, key: str) -> bytes:
    return bytes(obstore.get(store.objects.backend, key).bytes())


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def local(tmp_path: Path) -> Path:
    path = tmp_path / "local"
    path.mkdir()
    return path


def test_plaintext_round_trip_is_confirmed_and_identical(
    lease: Lease, store: Store, local: Path
) -> None:
    """A multipart upload (12 MiB, 5 MiB parts... the store's 8 MiB default) is confirmed with
    the file's SHA-256 and size, listed as confirmed, and downloads byte for byte."""
    source = archive_file(local, NAME, 12 * MiB + 17)
    up = store.upload(source, lease=lease)
    assert (up.name, up.size, up.sha256, up.encrypted) == (
        NAME,
        source.stat().st_size,
        sha256(source),
        False,
    )
    confirmation = store.confirm(NAME)
    assert confirmation.confirmed, confirmation.reason
    assert (confirmation.size, confirmation.sha256) == (up.size, up.sha256)
    assert store.confirm(NAME, deep=True).confirmed
    listing = store.list()
    assert [(o.name, o.confirmed, o.size) for o in listing.objects] == [(NAME, True, up.size)]
    assert listing.problems == ()
    dest = local / "restored" / NAME
    dest.parent.mkdir()
    got = store.download(NAME, dest)
    assert dest.read_bytes() == source.read_bytes()
    assert got.sha256 == up.sha256 and not got.decrypted
    assert leftovers(dest.parent) == [NAME]


def test_encrypted_round_trip_stores_age_ciphertext(
    lease: Lease, store: Store, local: Path, age_identity: tuple[x25519.Identity, Path]
) -> None:
    """Encrypted to a recipient, the object is <name>.age, is age ciphertext that pyrage opens
    with the identity into the original, holds no plaintext, and downloads decrypted."""
    identity, identity_file = age_identity
    source = archive_file(local, NAME, 3 * MiB + 5)
    up = store.upload(source, recipients=parse_recipients([str(identity.to_public())]), lease=lease)
    assert up.name == NAME + ".age" and up.encrypted
    stored = raw_get(store, store.key(up.name))
    assert stored.startswith(b"age-encryption.org/v1\n")
    assert source.read_bytes()[:4096] not in stored
    assert hashlib.sha256(stored).hexdigest() == up.sha256
    assert pyrage.decrypt(stored, [identity]) == source.read_bytes()
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(stored, [x25519.Identity.generate()])
    assert store.confirm(up.name).confirmed
    dest = local / "back.tar.gz"
    got = store.download(
        up.name, dest, identities=load_identities(identity_file), identity_source=str(identity_file)
    )
    assert got.decrypted and dest.read_bytes() == source.read_bytes()


@pytest.mark.parametrize("identity_kind", ["missing", "wrong"])
def test_wrong_or_missing_identity_is_one_clear_error_and_no_file(
    lease: Lease,
    store: Store,
    local: Path,
    age_identity: tuple[x25519.Identity, Path],
    identity_kind: str,
) -> None:
    """Without the identity, or with another one, the download fails naming the object and
    the identity, and leaves no file (nor temp file) behind."""
    identity, _ = age_identity
    source = archive_file(local, NAME, MiB)
    up = store.upload(source, recipients=[identity.to_public()], lease=lease)
    dest_dir = local / "restore"
    dest_dir.mkdir()
    identities = [] if identity_kind == "missing" else [x25519.Identity.generate()]
    with pytest.raises(OffsiteDecryptError) as err:
        store.download(
            up.name, dest_dir / "x.tar.gz", identities=identities, identity_source="k.txt"
        )
    assert up.name in str(err.value) and "k.txt" in str(err.value)
    assert leftovers(dest_dir) == []


def _swap(store: Store, local: Path, up_name: str) -> None:
    other = archive_file(local, "other.tar.gz", 2 * MiB, seed=9)
    obstore.put(store.objects.backend, store.key(up_name), other.read_bytes())


def _truncate(store: Store, _local: Path, up_name: str) -> None:
    data = raw_get(store, store.key(up_name))
    obstore.put(store.objects.backend, store.key(up_name), data[: len(data) // 2])


def _tamper_keeping_record_consistent(store: Store, _local: Path, up_name: str) -> None:
    """Flip one byte, and make the record's size and ETag match again: only the SHA-256 can
    tell (bit rot on a disk that keeps the same ETag, or a record rewritten by a tamperer)."""
    data = bytearray(raw_get(store, store.key(up_name)))
    data[len(data) // 2] ^= 0x01
    etag = obstore.put(store.objects.backend, store.key(up_name), bytes(data))["e_tag"]
    record = store.read_record(up_name)
    assert record is not None
    forged = Record(
        record.name, record.size, record.sha256, etag, record.encrypted, record.source_size
    )
    obstore.put(store.objects.backend, store.record_key(up_name), forged.to_json())


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "age"])
@pytest.mark.parametrize(
    ("damage", "fault"),
    [
        (_truncate, "bytes"),
        (_swap, "bytes"),
        (_tamper_keeping_record_consistent, "hash to"),
    ],
    ids=["truncated", "swapped", "tampered"],
)
def test_damaged_object_is_refused_and_nothing_written(
    lease: Lease,
    store: Store,
    local: Path,
    age_identity: tuple[x25519.Identity, Path],
    damage: Callable[[Store, Path, str], None],
    fault: str,
    encrypted: bool,
) -> None:
    """A truncated, swapped or tampered object: confirm says not confirmed (deep for the
    tamper), download raises one error naming the object, and no file is left."""
    identity, _ = age_identity
    source = archive_file(local, NAME, 2 * MiB + 3)
    up = store.upload(source, recipients=[identity.to_public()] if encrypted else [], lease=lease)
    damage(store, local, up.name)
    assert not store.confirm(up.name, deep=True).confirmed
    dest_dir = local / "restore"
    dest_dir.mkdir()
    with pytest.raises(OffsiteObjectCorruptError) as err:
        store.download(up.name, dest_dir / NAME, identities=[identity])
    assert f"offsite object {up.name!r} refused" in str(err.value)
    assert fault in str(err.value) or "replaced" in str(err.value), str(err.value)
    assert leftovers(dest_dir) == []


def test_object_without_record_is_unfinished_not_offsite(
    lease: Lease, store: Store, local: Path
) -> None:
    """An object whose checksum record is missing (the upload died before it) is neither
    confirmed nor downloadable; a missing name is not-found."""
    source = archive_file(local, NAME, MiB)
    store.upload(source, lease=lease)
    store.objects.delete(store.record_key(NAME))
    confirmation = store.confirm(NAME)
    assert not confirmation.confirmed and "no checksum record" in confirmation.reason
    assert [o.confirmed for o in store.list().objects] == [False]
    with pytest.raises(OffsiteObjectCorruptError, match="no checksum record"):
        store.download(NAME, local / "out")
    with pytest.raises(OffsiteObjectNotFoundError):
        store.download("absent.tar.gz", local / "out")
    assert not (local / "out").exists()


def test_listing_turns_malformed_entries_into_problems(
    lease: Lease, store: Store, local: Path
) -> None:
    """Foreign keys, an unreadable record and a record without its object are per-item
    problems; the good object is still listed, confirmed."""
    store.upload(archive_file(local, NAME, 4096), lease=lease)
    store.upload(archive_file(local, "b.tar.gz", 4096), lease=lease)
    backend = store.objects.backend
    obstore.put(backend, store.key("b.tar.gz").replace("b.tar.gz", "nested/x.tar.gz"), b"x")
    obstore.put(backend, store.key("b.tar.gz").replace("b.tar.gz", "bad name!"), b"x")
    obstore.put(backend, store.record_key("b.tar.gz"), b"{not json")
    obstore.put(backend, store.record_key("gone.tar.gz"), b"{}")
    listing = store.list()
    by_name = {o.name: o for o in listing.objects}
    assert by_name[NAME].confirmed
    assert not by_name["b.tar.gz"].confirmed and "not JSON" in by_name["b.tar.gz"].reason
    reasons = sorted((p.key.rsplit("/", 1)[-1], p.reason) for p in listing.problems)
    assert reasons == [
        ("bad name!", "not an archive object name"),
        ("gone.tar.gz.json", "checksum record without object"),
        ("x.tar.gz", "not an archive object name"),
    ]


def test_delete_removes_object_and_record(lease: Lease, store: Store, local: Path) -> None:
    """After delete, neither the object nor its record is listed; deleting again is fine."""
    store.upload(archive_file(local, NAME, 4096), lease=lease)
    store.delete(NAME, lease=lease)
    store.delete(NAME, lease=lease)
    assert store.list().objects == () and store.list().problems == ()
    assert store.read_record(NAME) is None


def test_download_never_overwrites(lease: Lease, store: Store, local: Path) -> None:
    """An existing destination is refused; it keeps its content."""
    source = archive_file(local, NAME, 4096)
    store.upload(source, lease=lease)
    dest = local / "taken"
    dest.write_bytes(b"mine")
    with pytest.raises(ArchiveExistsError):
        store.download(NAME, dest)
    assert dest.read_bytes() == b"mine"


def test_reupload_replaces_and_confirms_the_new_bytes(
    lease: Lease, store: Store, local: Path
) -> None:
    """Uploading a name again (a retried job) leaves the record vouching for the new bytes."""
    store.upload(archive_file(local, NAME, 4096, seed=1), lease=lease)
    second = archive_file(local / ".." / "local", "second", 8192, seed=2)
    up = store.upload(second, name=NAME, lease=lease)
    record = store.read_record(NAME)
    assert record is not None and record.sha256 == sha256(second) == up.sha256
    assert store.confirm(NAME, deep=True).confirmed


def test_unreachable_endpoint_retries_with_backoff_then_one_error() -> None:
    """A dead endpoint: the configured attempts, waits doubling and capped, then
    OffsiteUnavailableError naming the URL and the operation; the credentials never show.
    Taking the lease (the first call of any writing sidecar) and listing both go that way."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    waits: list[float] = []
    target = parse_target("s3://nowhere/p", endpoint=f"http://127.0.0.1:{port}", path_style=True)
    from backup_sidecar.offsite import S3Credentials

    store = Store(
        target,
        credentials=S3Credentials("AKIDVISIBLE", "very-secret-value"),
        retry=fast_retry(attempts=4, sleep=waits.append),
    )
    for operation in (Lease(store).acquire, store.list):
        waits.clear()
        with pytest.raises(OffsiteUnavailableError) as err:
            operation()
        assert waits == [0.01, 0.02, 0.04]
        assert "s3://nowhere/p" in str(err.value) and "4 time(s)" in str(err.value)
        assert "very-secret-value" not in str(err.value) + repr(store.objects.backend)
    assert "very-secret-value" not in repr(store.target)


def test_record_parser_refuses_malformed_records() -> None:
    """Every malformed record is one RecordError (never a KeyError or TypeError)."""
    from backup_sidecar.errors import RecordError

    good = Record("a.tar.gz", 1, "0" * 64, None, False, 1).to_json()
    assert parse_record("a.tar.gz", good).size == 1
    for raw in [
        b"[",
        b"[]",
        b'{"format": 1}',
        b"\xff",
        b"1" * 70000,
        good.replace(b'"size": 1', b'"size": -1'),
        good.replace(b"a.tar.gz", b"b.tar.gz"),
    ]:
        with pytest.raises(RecordError):
            parse_record("a.tar.gz", raw)
    deep = b"[" * 100000
    with pytest.raises(RecordError):
        parse_record("a.tar.gz", deep[:60000])


def test_upload_never_follows_a_link(lease: Lease, store: Store, local: Path) -> None:
    """A symbolic link in the backup directory is not uploaded (shared ground: never follow a
    link there); nothing appears offsite."""
    target = archive_file(local, "real.tar.gz", 4096)
    (local / NAME).symlink_to(target)
    with pytest.raises(OSError, match=r"Too many levels|symbolic"):
        store.upload(local / NAME, lease=lease)
    assert store.list().objects == ()


def test_unusable_keys_are_one_clear_error_without_the_secret(tmp_path: Path) -> None:
    """A bad recipient is refused naming its position; an identity file that is missing,
    binary, empty or holds a malformed line is refused naming the file (and the line number),
    never echoing a line of it."""
    with pytest.raises(OffsiteKeyError, match=r"recipient #2"):
        parse_recipients([str(x25519.Identity.generate().to_public()), "age1notakey"])
    with pytest.raises(OffsiteKeyError, match="at least one"):
        parse_recipients([])
    malformed = "AGE-SECRET-KEY-1THISISNOTAVALIDKEYBUTLOOKSSECRET"
    cases = {
        "missing.key": (None, "cannot read"),
        "binary.key": (b"\xff\xfe", "not ASCII"),
        "empty.key": (b"# only a comment\n\n", "no AGE-SECRET-KEY-1"),
        "bad.key": (f"# comment\n{malformed}\n".encode(), "line 2 is not an age identity"),
    }
    os.mkfifo(tmp_path / "fifo.key")  # a FIFO is refused at once, not waited on for ever
    cases["fifo.key"] = (None, "not a regular file")
    (tmp_path / "dir.key").mkdir()
    cases["dir.key"] = (None, "not a regular file")
    for name, (content, reason) in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(OffsiteKeyError) as err:
            load_identities(path)
        assert str(path) in str(err.value) and reason in str(err.value)
        assert "SECRET" not in str(err.value).replace("AGE-SECRET-KEY-1...", "")
