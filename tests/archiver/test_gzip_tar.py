"""The strict gzip and tar readers, and that our archives open with gzip, tarfile and GNU tar."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from isal import isal_zlib

from backup_sidecar.archiver.gzipstream import (
    StrictGzipReader,
    compress_member,
    compress_member_exact,
    member_bound,
)
from backup_sidecar.archiver.tarstream import (
    Member,
    TarReader,
    end_of_archive,
    member_header,
    padding,
)
from backup_sidecar.errors import GzipFormatError, OutputLimitError, TarFormatError
from support.archives import USER, backup_of, regular, special, tar_of
from support.databases import make_db

METADATA = "backup_metadata.json"


def read_strict(data: bytes, *, limit: int = 1 << 30) -> bytes:
    reader = StrictGzipReader(io.BytesIO(data), limit=limit)
    out = bytearray()
    buf = bytearray(4096)
    while n := reader.readinto(buf):
        out += buf[:n]
    return bytes(out)


# --- StrictGzipReader -----------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=5))
def test_gzip_multi_member_round_trip(parts: list[bytes]) -> None:
    """Concatenated members (ours and Python's gzip, empty ones too) read back as one stream."""
    data = b"".join(
        compress_member(p, level=1) if i % 2 else gzip.compress(p) for i, p in enumerate(parts)
    )
    assert read_strict(data) == b"".join(parts)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=5000), st.integers(0, 300))
def test_gzip_member_of_an_exact_size(payload: bytes, spare: int) -> None:
    """A member padded to any size from its smallest up to ``member_bound`` is exactly that
    long and reads back as the payload, by Python's gzip and our strict reader, followed by
    another member; one byte less than it needs is refused."""
    deflate = isal_zlib.compressobj(1, isal_zlib.DEFLATED, -15)
    smallest = 10 + 1 + len(deflate.compress(payload) + deflate.flush()) + 8  # header, NUL, trailer
    size = min(smallest + spare, member_bound(len(payload)))
    with pytest.raises(ValueError):
        compress_member_exact(payload, level=1, size=smallest - 1)
    member = compress_member_exact(payload, level=1, size=size)
    assert len(member) == size
    data = member + compress_member(b"next", level=1)
    assert gzip.decompress(data) == read_strict(data) == payload + b"next"


def test_gnu_gzip_reads_a_padded_member(tmp_path: Path) -> None:
    padded = tmp_path / "padded.gz"
    padded.write_bytes(compress_member_exact(b"metadata\n", level=1, size=4096))
    out = subprocess.run(["gzip", "-dc", str(padded)], capture_output=True, check=True)
    assert out.stdout == b"metadata\n" and padded.stat().st_size == 4096


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=1, max_size=2000), st.data())
def test_gzip_every_prefix_is_refused(payload: bytes, data: st.DataObject) -> None:
    """A gzip member cut anywhere before its end is refused, never returned short. (A cut exactly
    between two members leaves a valid shorter stream; the tar layer catches that.)"""
    first = gzip.compress(b"first member")
    full = first + compress_member(payload, level=1)
    cut = data.draw(st.integers(len(first) + 1, len(full) - 1), label="cut")
    with pytest.raises(GzipFormatError):
        read_strict(full[:cut])


@pytest.mark.parametrize(
    ("offset", "what"), [(-8, "CRC-32"), (-5, "CRC-32 high byte"), (-4, "ISIZE"), (-1, "ISIZE")]
)
def test_gzip_trailer_fault_is_refused(offset: int, what: str) -> None:
    """A wrong CRC-32 or length in a member's trailer is a fault (tarfile alone never checks)."""
    good = gzip.compress(b"payload " * 1000)
    bad = bytearray(good)
    bad[offset] ^= 0x01
    with pytest.raises(GzipFormatError, match="invalid gzip data"):
        read_strict(bytes(bad) + gzip.compress(b"next"))


@pytest.mark.parametrize(
    ("tail", "reason"),
    [
        (b"garbage", "trailing garbage"),
        (b"\0", "trailing garbage"),
        (b"\0" * 512, "trailing garbage"),
        (b"\0" * 10240, "trailing garbage"),
        (b"\x1f", "trailing garbage"),
        (b"\x1f\x8b", "gzip"),
        (b"\x1f\x8b\x08\x00", "gzip"),
    ],
)
def test_gzip_anything_after_the_last_member_is_refused(tail: bytes, reason: str) -> None:
    """Zero padding (which Python's gzip module quietly accepts), garbage or half a header after
    the last member is refused."""
    data = gzip.compress(b"payload")
    if tail.strip(b"\0") == b"":
        assert gzip.decompress(data + tail) == b"payload"  # the lenient reader we replace
    with pytest.raises(GzipFormatError, match=reason):
        read_strict(data + tail)


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"", "empty file"), (b"BZh91AY&SY", "not gzip"), (b"\x1f", "truncated")],
)
def test_gzip_empty_or_foreign_input_is_refused(data: bytes, reason: str) -> None:
    """An empty file, another format, or a lone magic byte is not a gzip stream."""
    with pytest.raises(GzipFormatError, match=reason):
        read_strict(data)


def test_gzip_output_limit_is_exact() -> None:
    """Output up to ``limit`` bytes reads; one byte more raises OutputLimitError (a bomb)."""
    payload = b"\0" * (4 << 20)
    data = gzip.compress(payload) + gzip.compress(b"x")
    assert len(data) < 64 << 10
    assert read_strict(data, limit=len(payload) + 1) == payload + b"x"
    with pytest.raises(OutputLimitError, match=f"limit of {len(payload)} bytes"):
        read_strict(data, limit=len(payload))


def test_gzip_limit_may_be_lowered_while_reading() -> None:
    """Lowering ``limit`` after the first bytes (as verify does once it knows the sizes) applies
    to the rest of the stream."""
    reader = StrictGzipReader(io.BytesIO(gzip.compress(b"a" * 100_000)), limit=1 << 30)
    buf = bytearray(1000)
    assert reader.readinto(buf) == 1000
    reader.limit = 50_000
    with pytest.raises(OutputLimitError):
        while reader.readinto(buf):
            pass


# --- TarReader ------------------------------------------------------------------------------


def read_tar(data: bytes) -> dict[str, bytes]:
    reader = TarReader(io.BytesIO(data))
    out = {}
    for member in reader.members():
        out[member.name] = reader.read(member.size + 1)
        assert len(out[member.name]) == member.size
    reader.finish()
    return out


def test_tar_reads_members_written_by_tarfile() -> None:
    """Regular members come back with exact names and bytes, sizes around block boundaries."""
    members = {
        f"m{n}.db": bytes(range(256)) * (n // 256) + b"x" * (n % 256)
        for n in (0, 1, 511, 512, 513, 5000)
    }
    assert read_tar(tar_of([regular(n, d) for n, d in members.items()])) == members


def test_tar_pax_long_name() -> None:
    """A name longer than the 100-byte ustar field arrives through a pax header, written by
    tarfile and by our own member_header."""
    long_name = "n" * 150 + ".db"
    assert read_tar(tar_of([regular(long_name, b"data")])) == {long_name: b"data"}
    ours = member_header(long_name, size=4, mtime=0) + b"data" + padding(4) + end_of_archive()
    assert read_tar(ours) == {long_name: b"data"}


def test_tar_pax_size_overrides_header() -> None:
    """A pax ``size`` record is the member's size (needed for members over 8 GiB)."""
    data = member_header("big.db", size=3, mtime=0) + b"abc" + padding(3) + end_of_archive()
    reader = TarReader(io.BytesIO(data))
    assert list(reader.members()) == [Member("big.db", 3)]


@pytest.mark.parametrize(
    ("member", "kind"),
    [
        (special(USER, tarfile.SYMTYPE, linkname="/etc/passwd"), "symlink"),
        (special(USER, tarfile.LNKTYPE, linkname="arrow_database.db"), "hard link"),
        (special(USER, tarfile.DIRTYPE), "directory"),
        (special(USER, tarfile.CHRTYPE, devmajor=1, devminor=3), "character device"),
        (special(USER, tarfile.BLKTYPE, devmajor=8, devminor=0), "block device"),
        (special(USER, tarfile.FIFOTYPE), "FIFO"),
        (special(USER, tarfile.CONTTYPE), "type"),
    ],
)
def test_tar_refuses_non_regular_members(member: tuple[tarfile.TarInfo, bytes], kind: str) -> None:
    """Links, directories, devices, FIFOs and other types are refused, naming the member."""
    with pytest.raises(TarFormatError, match=f"'user_data.db' is a {kind}"):
        read_tar(tar_of([regular("ok.db", b"x"), member]))


@pytest.mark.parametrize("name", ["../x", "/etc/x", "a/b", "..", ".", "a\\b", "dir/"])
def test_tar_refuses_paths(name: str) -> None:
    """Only plain file names: absolute paths, ``..``, separators are refused."""
    with pytest.raises(TarFormatError):
        read_tar(tar_of([regular(name, b"x")]))


def test_tar_refuses_gnu_long_name_records() -> None:
    """GNU long-name records (not POSIX) are refused rather than half-understood."""
    with pytest.raises(TarFormatError, match="is a type"):
        read_tar(tar_of([regular("g" * 150, b"x")], fmt=tarfile.GNU_FORMAT))


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda t: t[:-1024] + b"hidden" + b"\0" * 1018, "after the end"),
        (lambda t: t + b"\0" * 511 + b"!", "after the end"),
        (lambda t: t[:1536], "ends in the middle"),
        (lambda t: t[:700], "ends in the middle"),
        (lambda t: t[:512], "ends in the middle"),
        (lambda t: b"\0" * 512 + b"\1" * 512, "lone zero block"),
        (lambda t: b"\xff" * 512, "invalid tar header"),
    ],
)
def test_tar_stream_faults(mutate: Any, reason: str) -> None:
    """Hidden data after the end marker, truncation, a lone zero block and a bad header checksum
    are faults; zero padding after the end marker (tarfile writes records of 10 KiB) is not."""
    good = tar_of([regular("a.db", b"a" * 100)])
    assert len(good) == 10240
    assert read_tar(good) == {"a.db": b"a" * 100}
    with pytest.raises(TarFormatError, match=reason):
        read_tar(mutate(good))


# --- our archives in everyone else's tools --------------------------------------------------


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An archive of a rollback ``arrow`` and a WAL ``user`` database written by create_backup."""
    root = tmp_path_factory.mktemp("interop")
    dbs = {
        "arrow": make_db(root / "arrow_database.db", wal=False, rows=300),
        "user": make_db(root / "user_data.db", wal=True, rows=300),
    }
    (root / "backups").mkdir()
    return backup_of(dbs, backup_dir=root / "backups", name="interop", policy="daily").path


def test_python_gzip_and_tarfile_read_our_archive(archive: Path) -> None:
    """Python's gzip reads the whole multi-member stream; tarfile lists the metadata first and
    its databases' SHA-256 match the metadata."""
    assert gzip.decompress(archive.read_bytes())[-1024:] == b"\0" * 1024
    with tarfile.open(archive, mode="r:gz") as tar:
        assert tar.getnames() == [METADATA, "arrow_database.db", "user_data.db"]
        assert all(m.isreg() for m in tar)
        metadata = tar.extractfile(METADATA)
        assert metadata is not None
        meta = json.loads(metadata.read())
        for db, entry in meta["databases"].items():
            member = tar.extractfile(entry["file"])
            assert member is not None, db
            data = member.read()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"], db
            assert len(data) == entry["size_bytes"]


needs_gnu_tar = pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar not installed")


@needs_gnu_tar
def test_gnu_tar_lists_and_extracts_our_archive(archive: Path, tmp_path: Path) -> None:
    """``tar -tzf`` lists the metadata first; ``tar -xzf`` extracts databases SQLite opens, with
    the checksums the metadata records."""
    listing = subprocess.run(
        ["tar", "-tzf", str(archive)], capture_output=True, text=True, check=True
    )
    assert listing.stdout.splitlines() == [METADATA, "arrow_database.db", "user_data.db"]
    assert listing.stderr == ""
    out = tmp_path / "x"
    out.mkdir()
    extract = subprocess.run(
        ["tar", "-xzf", str(archive), "-C", str(out)], capture_output=True, text=True, check=True
    )
    assert extract.stderr == ""
    meta = json.loads((out / METADATA).read_text())
    for entry in meta["databases"].values():
        data = (out / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert data.startswith(b"SQLite format 3\0")


@pytest.mark.skipif(shutil.which("gzip") is None, reason="gzip not installed")
def test_gzip_tool_tests_our_archive(archive: Path) -> None:
    """``gzip -t`` (which checks every member's CRC) accepts the archive without a warning."""
    result = subprocess.run(
        ["gzip", "-t", str(archive)], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stderr) == (0, "")
