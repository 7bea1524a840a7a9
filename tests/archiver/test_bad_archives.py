"""Damaged and hostile archives: verify refuses each, naming the fault; restore changes nothing.

One good archive of two small real databases is written once per module; every bad input is
derived from its bytes (flipped, truncated, padded) or re-packed around its real members with
Python's tarfile and gzip. Each bad input is checked through the library (fast, every case) and
through the real CLI (``verify`` and ``restore --force``, all cases run concurrently).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from backup_sidecar.archiver import (
    DatabaseSpec,
    Limits,
    create_backup,
    list_archives,
    restore_archive,
    staging_area,
    verify_archive,
)
from backup_sidecar.errors import CorruptArchiveError
from conftest import make_db

ARCHIVE = "daily_20260101_000000"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
METADATA = "backup_metadata.json"
ARROW, USER = "arrow_database.db", "user_data.db"
GZIP_HEADER = 10
GZIP_TRAILER = 8


@dataclass(frozen=True)
class GoodArchive:
    """The pristine archive, its parts, and where each gzip member starts."""

    data: bytes
    metadata: dict[str, Any]
    members: dict[str, bytes]
    second_member: int
    #: Where the metadata member's deflate data starts: after the gzip header and its comment
    #: (the spaces that make the member fill the room left for it).
    first_deflate: int
    sources: dict[str, Path]
    scratch: Path

    @property
    def tar(self) -> bytes:
        return gzip.decompress(self.data)


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> GoodArchive:
    return build_good(tmp_path_factory.mktemp("good") / "scene")


def build_good(root: Path) -> GoodArchive:
    """A good archive of a rollback-journal ``arrow`` and a WAL ``user`` database of 50 rows
    each, built under the new directory ``root`` (the reliability suite's scenes use it too)."""
    root.mkdir(parents=True)
    arrow = make_db(root / ARROW, wal=False, rows=50)
    user = make_db(root / USER, wal=True, rows=50)
    backups = root / "backups"
    backups.mkdir()
    info = create_backup(
        [DatabaseSpec("arrow", arrow), DatabaseSpec("user", user)],
        backup_dir=backups,
        name=ARCHIVE,
        policy="daily",
        now=NOW,
    )
    data = info.path.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    metadata = json.loads(members.pop(METADATA))
    first = zlib.decompressobj(31)
    first.decompress(data)
    scratch = root / "scratch"
    scratch.mkdir()
    return GoodArchive(
        data=data,
        metadata=metadata,
        members=members,
        second_member=len(data) - len(first.unused_data),
        first_deflate=data.index(b"\0", GZIP_HEADER) + 1,
        sources={"arrow": arrow, "user": user},
        scratch=scratch,
    )


# --- building bad archives ------------------------------------------------------------------


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    return info, data


def special(name: str, kind: bytes, **attrs: Any) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, b""


def tar_gz(members: list[tuple[tarfile.TarInfo, bytes]], *, after_end: bytes = b"") -> bytes:
    """A single-member gzip of a POSIX tar written by Python's tarfile (a foreign writer)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return gzip.compress(buf.getvalue() + after_end, mtime=0)


def metadata_bytes(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=2).encode()


def repack(
    g: GoodArchive,
    *,
    metadata: dict[str, Any] | bytes | None = None,
    replace: dict[str, bytes] | None = None,
    extra: list[tuple[tarfile.TarInfo, bytes]] | None = None,
    drop: tuple[str, ...] = (),
) -> bytes:
    """The good archive's members through tarfile, with some replaced, dropped or added."""
    doc = metadata if metadata is not None else g.metadata
    meta = doc if isinstance(doc, bytes) else metadata_bytes(doc)
    members = [regular(METADATA, meta)]
    for name, data in g.members.items():
        if name not in drop:
            members.append(regular(name, (replace or {}).get(name, data)))
    return tar_gz(members + (extra or []))


def with_db_entry(g: GoodArchive, db: str, **changes: Any) -> dict[str, Any]:
    doc = json.loads(json.dumps(g.metadata))
    doc["databases"][db].update(changes)
    return doc


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def flip(data: bytes, offset: int, mask: int = 0xFF) -> bytes:
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


def corrupt_table_page(db: bytes, scratch: Path) -> bytes:
    """The database with one row's text changed in the table b-tree page only, so its index
    no longer matches: ``quick_check`` passes, only ``integrity_check`` notices."""
    path = scratch / "corrupt.db"
    path.write_bytes(db)
    conn = sqlite3.connect(path)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'items'").fetchone()[0]
    conn.close()
    start = (root - 1) * page_size
    page = bytearray(db[start : start + page_size])
    assert page[0] == 0x0D, "the items table should fit in one leaf page"
    at = page.index(b"row-7")
    page[at : at + 5] = b"row-X"
    corrupt = db[:start] + bytes(page) + db[start + page_size :]
    path.write_bytes(corrupt)
    conn = sqlite3.connect(path)
    quick = conn.execute("PRAGMA quick_check").fetchone()[0]
    full = conn.execute("PRAGMA integrity_check").fetchone()[0]
    conn.close()
    path.unlink()
    assert (quick, full != "ok") == ("ok", True), (quick, full)
    return corrupt


def not_sqlite(g: GoodArchive) -> bytes:
    size = len(g.members[USER])
    line = b"definitely not an SQLite database\n"
    junk = (line * (size // len(line) + 1))[:size]
    doc = with_db_entry(g, "user", sha256=sha256(junk))
    return repack(g, metadata=doc, replace={USER: junk})


def fails_integrity(g: GoodArchive) -> bytes:
    corrupt = corrupt_table_page(g.members[USER], g.scratch)
    return repack(
        g, metadata=with_db_entry(g, "user", sha256=sha256(corrupt)), replace={USER: corrupt}
    )


def larger_than_metadata(g: GoodArchive) -> bytes:
    bigger = g.members[USER] + b"\0" * 4096
    return repack(
        g, metadata=with_db_entry(g, "user", sha256=sha256(bigger)), replace={USER: bigger}
    )


def hidden_after_end(g: GoodArchive) -> bytes:
    members = [regular(METADATA, metadata_bytes(g.metadata))]
    members += [regular(n, d) for n, d in g.members.items()]
    return tar_gz(members, after_end=b"hidden payload after the end-of-archive marker")


def metadata_not_first(g: GoodArchive) -> bytes:
    members = [regular(n, d) for n, d in g.members.items()]
    return tar_gz([*members, regular(METADATA, metadata_bytes(g.metadata))])


def duplicate(g: GoodArchive) -> bytes:
    return repack(g, extra=[regular(USER, g.members[USER])])


#: name -> (builder, the fault the error must name)
BAD: dict[str, tuple[Callable[[GoodArchive], bytes], str]] = {
    "zero_length": (lambda g: b"", "empty"),
    "not_gzip": (lambda g: b"PK\x03\x04 this is a zip, not gzip" * 10, "not gzip"),
    "gzip_of_not_tar": (lambda g: gzip.compress(b"plain text, no tar here\n" * 100), "tar"),
    "gzip_of_short_text": (lambda g: gzip.compress(b"tiny"), "tar"),
    "flipped_metadata_deflate": (lambda g: flip(g.data, g.first_deflate + 40), "gzip"),
    "flipped_database_deflate": (lambda g: flip(g.data, g.second_member + 200), "gzip"),
    "flipped_first_crc": (lambda g: flip(g.data, g.second_member - GZIP_TRAILER), "gzip"),
    "flipped_last_isize": (lambda g: flip(g.data, len(g.data) - 1), "gzip"),
    "flipped_second_magic": (lambda g: flip(g.data, g.second_member), "garbage"),
    "flipped_first_method": (lambda g: flip(g.data, 2), "gzip"),
    "truncated_in_metadata": (lambda g: g.data[:100], "truncated"),
    "truncated_at_member_boundary": (lambda g: g.data[: g.second_member], "tar stream ends"),
    "truncated_in_database": (lambda g: g.data[: g.second_member + 300], "truncated"),
    "truncated_in_trailer": (lambda g: g.data[:-3], "truncated"),
    "trailing_garbage": (lambda g: g.data + b"garbage", "trailing garbage"),
    "trailing_gzip_magic": (lambda g: g.data + b"\x1f\x8b", "gzip"),
    "trailing_zero_byte": (lambda g: g.data + b"\0", "trailing garbage"),
    "trailing_zero_block": (lambda g: g.data + b"\0" * 1024, "trailing garbage"),
    "member_dotdot": (lambda g: repack(g, extra=[regular("../x", b"escaped")]), "'../x'"),
    "member_absolute": (lambda g: repack(g, extra=[regular("/etc/x", b"escaped")]), "'/etc/x'"),
    "member_dotdot_first": (
        lambda g: tar_gz(
            [regular("../x", b"escaped"), regular(METADATA, metadata_bytes(g.metadata))]
        ),
        "'../x'",
    ),
    "symlink": (
        lambda g: repack(
            g, drop=(USER,), extra=[special(USER, tarfile.SYMTYPE, linkname="/etc/passwd")]
        ),
        "symlink",
    ),
    "hardlink": (
        lambda g: repack(g, drop=(USER,), extra=[special(USER, tarfile.LNKTYPE, linkname=ARROW)]),
        "hard link",
    ),
    "fifo": (lambda g: repack(g, drop=(USER,), extra=[special(USER, tarfile.FIFOTYPE)]), "FIFO"),
    "char_device": (
        lambda g: repack(
            g, drop=(USER,), extra=[special(USER, tarfile.CHRTYPE, devmajor=1, devminor=3)]
        ),
        "device",
    ),
    "block_device": (
        lambda g: repack(
            g, drop=(USER,), extra=[special(USER, tarfile.BLKTYPE, devmajor=8, devminor=0)]
        ),
        "device",
    ),
    "directory": (lambda g: repack(g, extra=[special("x", tarfile.DIRTYPE)]), "directory"),
    "unexpected_member": (
        lambda g: repack(g, extra=[regular("notes.txt", b"hello")]),
        "unexpected member 'notes.txt'",
    ),
    "missing_database": (lambda g: repack(g, drop=(USER,)), f"missing member '{USER}'"),
    "duplicate_member": (duplicate, f"duplicate member '{USER}'"),
    "metadata_not_first": (metadata_not_first, f"not {METADATA}"),
    "metadata_missing": (lambda g: tar_gz([regular(n, d) for n, d in g.members.items()]), METADATA),
    "metadata_not_json": (lambda g: repack(g, metadata=b"{not json at all"), "not valid JSON"),
    "metadata_not_object": (lambda g: repack(g, metadata=b"[1, 2, 3]"), "not a JSON object"),
    "metadata_size_as_string": (
        lambda g: repack(
            g, metadata=with_db_entry(g, "user", size_bytes=str(len(g.members[USER])))
        ),
        "databases.user.size_bytes",
    ),
    "metadata_sha256_not_hex": (
        lambda g: repack(g, metadata=with_db_entry(g, "user", sha256="not-a-digest")),
        "databases.user.sha256",
    ),
    "metadata_snapshot_seconds_negative": (
        lambda g: repack(g, metadata=with_db_entry(g, "user", snapshot_seconds=-1)),
        "databases.user.snapshot_seconds",
    ),
    "metadata_file_traversal": (
        lambda g: repack(g, metadata=with_db_entry(g, "user", file="../x")),
        "databases.user.file",
    ),
    "not_sqlite": (not_sqlite, f"'{USER}' is not an SQLite database"),
    "fails_integrity_check": (fails_integrity, f"'{USER}' fails integrity_check"),
    "sha256_mismatch": (
        lambda g: repack(g, metadata=with_db_entry(g, "user", sha256="0" * 64)),
        f"'{USER}': sha256 mismatch",
    ),
    "member_larger_than_metadata": (larger_than_metadata, "metadata says"),
    "data_after_end_marker": (hidden_after_end, "after the end of the tar archive"),
}


def test_repacked_good_archive_verifies(good: GoodArchive, backup_dir: Path) -> None:
    """The builders' positive control: the good members re-packed by Python's tarfile+gzip
    verify, so every refusal below is caused by its one fault, not by the re-packing."""
    path = backup_dir / "repacked.tar.gz"
    path.write_bytes(repack(good))
    with staging_area(backup_dir, purpose="verify") as area:
        verified = verify_archive(path, staging=area)
        assert {p.name: p.read_bytes() for p in verified.staged.values()} == good.members


def test_archive_without_snapshot_seconds_verifies(good: GoodArchive, backup_dir: Path) -> None:
    """Archives written before the snapshot's lock time was recorded lack the key: still good."""
    doc = json.loads(json.dumps(good.metadata))
    for entry in doc["databases"].values():
        assert entry.pop("snapshot_seconds") >= 0
    path = backup_dir / "older.tar.gz"
    path.write_bytes(repack(good, metadata=doc))
    with staging_area(backup_dir, purpose="verify") as area:
        verified = verify_archive(path, staging=area)
    assert all(e.snapshot_seconds is None for e in verified.manifest.databases.values())


# --- library level --------------------------------------------------------------------------


@dataclass
class Scene:
    """A backup directory holding one bad archive, and live databases a restore would replace."""

    root: Path
    backup_dir: Path
    archive: Path
    live: dict[str, Path]
    before_tree: set[str] = field(default_factory=set)
    before_live: dict[str, bytes] = field(default_factory=dict)

    def specs(self) -> dict[str, DatabaseSpec]:
        return {name: DatabaseSpec(name, path) for name, path in self.live.items()}

    def tree(self) -> set[str]:
        return {str(p.relative_to(self.root)) for p in self.root.rglob("*")}

    def freeze(self) -> None:
        self.before_tree = self.tree()
        self.before_live = {name: path.read_bytes() for name, path in self.live.items()}

    def assert_untouched(self) -> None:
        """Live databases byte-identical, nothing new outside ``.staging`` (bar lock files),
        ``.staging`` empty, no new archive."""
        assert {n: p.read_bytes() for n, p in self.live.items()} == self.before_live
        staging = self.backup_dir / ".staging"
        assert not staging.exists() or not any(staging.iterdir()), list(staging.iterdir())
        new = self.tree() - self.before_tree
        allowed = {"backups/.staging", "backups/.locks"}
        assert {p for p in new if p not in allowed and not p.startswith("backups/.locks/")} == set()
        assert sorted(self.backup_dir.glob("*.tar.gz")) == [self.archive]
        for escaped in (Path("/etc/x"), self.backup_dir / "x", staging / "x", self.root / "x"):
            assert not escaped.exists(), escaped


def make_scene(root: Path, good: GoodArchive, data: bytes) -> Scene:
    backup_dir = root / "backups"
    backup_dir.mkdir(parents=True)
    archive = backup_dir / f"{ARCHIVE}.tar.gz"
    archive.write_bytes(data)
    live_dir = root / "live"
    live_dir.mkdir()
    live = {}
    for name, src in good.sources.items():
        live[name] = live_dir / src.name
        shutil.copyfile(src, live[name])
    scene = Scene(root=root, backup_dir=backup_dir, archive=archive, live=live)
    scene.freeze()
    return scene


@pytest.fixture(params=sorted(BAD))
def bad_case(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_no_escape_target_exists_beforehand() -> None:
    """/etc/x must not exist before the traversal cases run, or their checks prove nothing."""
    assert not Path("/etc/x").exists()


def test_verify_refuses_bad_archive(bad_case: str, good: GoodArchive, tmp_path: Path) -> None:
    """verify_archive raises CorruptArchiveError naming the archive and this exact fault, and
    leaves nothing behind."""
    build, fault = BAD[bad_case]
    scene = make_scene(tmp_path, good, build(good))
    with (
        pytest.raises(CorruptArchiveError) as err,
        staging_area(scene.backup_dir, purpose="verify") as area,
    ):
        verify_archive(scene.archive, staging=area)
    assert err.value.archive == ARCHIVE
    assert fault in str(err.value), str(err.value)
    scene.assert_untouched()


def test_restore_refuses_bad_archive(bad_case: str, good: GoodArchive, tmp_path: Path) -> None:
    """restore_archive of a bad archive raises before anything changes: live databases are
    byte-identical, no safety backup is taken, the staging area is emptied."""
    build, fault = BAD[bad_case]
    scene = make_scene(tmp_path, good, build(good))
    with pytest.raises(CorruptArchiveError) as err:
        restore_archive(
            scene.archive,
            databases=scene.specs(),
            selected=None,
            backup_dir=scene.backup_dir,
            now=NOW,
        )
    assert fault in str(err.value), str(err.value)
    scene.assert_untouched()


@pytest.fixture(scope="module")
def flip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("flips")


def _verify_bytes(data: bytes, directory: Path) -> bool:
    """True if ``data`` verifies; False on CorruptArchiveError; any other exception propagates."""
    path = directory / f"{ARCHIVE}.tar.gz"
    path.write_bytes(data)
    try:
        with staging_area(directory, purpose="verify") as area:
            verify_archive(path, staging=area)
    except CorruptArchiveError:
        return False
    finally:
        path.unlink()
    return True


@st.composite
def flips(draw: st.DrawFn, size: int, second: int) -> tuple[int, int]:
    """An offset anywhere in the archive (biased toward the gzip headers and trailers, the
    metadata and the database member) and a non-zero xor mask."""
    edges = [
        st.integers(0, GZIP_HEADER - 1),
        st.integers(second - GZIP_TRAILER, second + GZIP_HEADER - 1),
        st.integers(size - GZIP_TRAILER, size - 1),
        st.integers(GZIP_HEADER, second - GZIP_TRAILER - 1),
        st.integers(second + GZIP_HEADER, size - GZIP_TRAILER - 1),
        st.integers(0, size - 1),
    ]
    offset = draw(st.one_of(edges))
    mask = draw(st.integers(1, 255))
    return offset, mask


def test_flipped_byte_anywhere_fails_or_changes_nothing(good: GoodArchive, flip_dir: Path) -> None:
    """Any flipped byte anywhere makes verify fail, unless it leaves every decompressed byte
    identical (gzip's unprotected MTIME/XFL/OS header fields and comment padding, deflate's
    unused bits and redundant Huffman-table encodings): verify never accepts different content."""
    original = good.tar

    @settings(max_examples=200, deadline=None, derandomize=True)
    @given(flips(len(good.data), good.second_member))
    @example((good.first_deflate + 40, 0xFF))  # metadata deflate data
    @example((GZIP_HEADER + 1, 0x20))  # a space of the header's comment turned into its end
    @example((good.second_member + 200, 0xFF))  # database deflate data
    @example((good.second_member - GZIP_TRAILER, 0x01))  # first member's CRC
    @example((len(good.data) - 1, 0x80))  # last member's ISIZE
    @example((good.second_member + 1, 0x01))  # second member's magic
    @example((3, 0x02))  # FLG: FHCRC set on a header that carries none
    def check(case: tuple[int, int]) -> None:
        offset, mask = case
        mutated = flip(good.data, offset, mask)
        if _verify_bytes(mutated, flip_dir):
            assert gzip.decompress(mutated) == original, f"offset {offset} mask {mask:#x} accepted"

    check()


def test_flips_in_content_bearing_bytes_always_fail(good: GoodArchive, flip_dir: Path) -> None:
    """Every single-bit flip of a gzip trailer (CRC-32, ISIZE) or of a magic/method byte
    makes verify fail: these bytes are never redundant."""
    second = good.second_member
    offsets = [0, 1, 2, second, second + 1, second + 2]
    offsets += list(range(second - GZIP_TRAILER, second))
    offsets += list(range(len(good.data) - GZIP_TRAILER, len(good.data)))
    accepted = [
        (offset, bit)
        for offset in offsets
        for bit in range(8)
        if _verify_bytes(flip(good.data, offset, 1 << bit), flip_dir)
    ]
    assert accepted == []


def test_every_truncation_fails(good: GoodArchive, flip_dir: Path) -> None:
    """The archive cut at ANY shorter length fails verify (dense sweep over every offset)."""
    accepted = [n for n in range(len(good.data)) if _verify_bytes(good.data[:n], flip_dir)]
    assert accepted == []


@pytest.fixture(scope="module")
def legacy_bomb() -> bytes:
    """A seed-format (no ``databases`` key) archive of ~100 KiB whose database member expands
    to 64 MiB of zeros."""
    doc = {
        "backup_name": "bomb",
        "created_at": "2026-01-01T00:00:00",
        "version": "1.0.0",
        "includes": {"arrow_database": False, "user_database": True},
    }
    size = 64 << 20
    meta = metadata_bytes(doc)
    head = (
        regular(METADATA, meta)[0].tobuf(tarfile.USTAR_FORMAT) + meta + b"\0" * (-len(meta) % 512)
    )
    db = tarfile.TarInfo(USER)
    db.size = size
    head += db.tobuf(tarfile.USTAR_FORMAT)
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = comp.compress(head)
    zeros = b"\0" * (1 << 20)
    for _ in range(size >> 20):
        out += comp.compress(zeros)
    out += comp.compress(b"\0" * 1024) + comp.flush()  # the end-of-archive marker
    return out


def test_gzip_bomb_is_stopped_at_the_limit(
    legacy_bomb: bytes, good: GoodArchive, tmp_path: Path
) -> None:
    """A tiny legacy archive expanding past ``Limits.max_total_bytes`` is refused as corrupt by
    verify and restore, and the partly staged member is removed."""
    assert len(legacy_bomb) < 256 << 10
    scene = make_scene(tmp_path, good, legacy_bomb)
    limits = Limits(max_total_bytes=8 << 20)
    with (
        pytest.raises(CorruptArchiveError, match="limit of 8388608 bytes"),
        staging_area(scene.backup_dir, purpose="verify") as area,
    ):
        verify_archive(scene.archive, staging=area, limits=limits)
    with pytest.raises(CorruptArchiveError, match="limit"):
        restore_archive(
            scene.archive,
            databases=scene.specs(),
            selected=None,
            backup_dir=scene.backup_dir,
            now=NOW,
            limits=limits,
        )
    scene.assert_untouched()


# --- the real CLI, every case at once ------------------------------------------------------


@dataclass(frozen=True)
class CliOutcome:
    scene: Scene
    verify: subprocess.CompletedProcess[str]
    restore: subprocess.CompletedProcess[str]


def _cli(scene: Scene, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_DATABASE_PATH")}
    env.pop("SIDECAR_CONFIG", None)
    env |= {
        "BACKUP_DIR": str(scene.backup_dir),
        "ARROW_DATABASE_PATH": str(scene.live["arrow"]),
        "USER_DATABASE_PATH": str(scene.live["user"]),
        "SIDECAR_LOG_FORMAT": "json",
    }
    return subprocess.run(
        [sys.executable, "-m", "backup_sidecar", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


#: The CLI runs one case per kind of fault (its start-up costs ~0.6 s of CPU per run); the
#: library tests above cover every variant.
CLI_CASES = (
    "flipped_database_deflate", "truncated_in_database", "trailing_garbage",
    "trailing_zero_block", "zero_length", "not_gzip", "gzip_of_not_tar", "member_dotdot",
    "member_absolute", "symlink", "hardlink", "fifo", "char_device", "unexpected_member",
    "missing_database", "duplicate_member", "metadata_not_first", "metadata_not_json",
    "metadata_size_as_string", "not_sqlite", "fails_integrity_check", "sha256_mismatch",
    "member_larger_than_metadata", "data_after_end_marker",
)  # fmt: skip


@pytest.fixture(scope="module")
def cli_outcomes(
    good: GoodArchive, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, CliOutcome]]:
    """``verify`` then ``restore --force`` of every bad archive through the real CLI, each case
    in its own directory, cases run concurrently (the CLI's start-up dominates)."""
    root = tmp_path_factory.mktemp("cli")
    scenes = {name: make_scene(root / name, good, BAD[name][0](good)) for name in CLI_CASES}

    def run(name: str) -> CliOutcome:
        scene = scenes[name]
        return CliOutcome(
            scene, _cli(scene, "verify", ARCHIVE), _cli(scene, "restore", "--force", ARCHIVE)
        )

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        yield dict(zip(CLI_CASES, pool.map(run, CLI_CASES), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("bad_case", CLI_CASES)
def test_cli_verify_and_restore_refuse(bad_case: str, cli_outcomes: dict[str, CliOutcome]) -> None:
    """CLI ``verify``: exit 1 and exactly one stderr line naming the archive and the fault, no
    traceback. ``restore --force``: exit 1, no traceback, and nothing changed on disk."""
    outcome = cli_outcomes[bad_case]
    _, fault = BAD[bad_case]
    verify, restore = outcome.verify, outcome.restore
    assert verify.returncode == 1, verify
    lines = verify.stderr.splitlines()
    assert len(lines) == 1, verify.stderr
    assert repr(ARCHIVE) in lines[0], lines[0]
    assert fault in lines[0], lines[0]
    assert restore.returncode == 1, restore
    assert "Traceback" not in restore.stderr + verify.stderr
    assert any(ARCHIVE in line and fault in line for line in restore.stderr.splitlines())
    assert "restored" not in restore.stdout
    outcome.scene.assert_untouched()


# --- list: damaged archives are shown, never skipped; only the metadata member is read ------

#: archive name -> (builder, expected status, a word of the reason for damaged ones)
LISTED: dict[str, tuple[Callable[[GoodArchive], bytes], str, str]] = {
    "good": (lambda g: g.data, "verified", ""),
    "db_member_deflate_flipped": (lambda g: flip(g.data, g.second_member + 200), "verified", ""),
    "db_member_crc_flipped": (lambda g: flip(g.data, len(g.data) - GZIP_TRAILER), "verified", ""),
    "cut_after_metadata_member": (lambda g: g.data[: g.second_member], "verified", ""),
    "zero_length": (lambda g: b"", "damaged", "empty"),
    "not_gzip": (BAD["not_gzip"][0], "damaged", "not gzip"),
    "cut_in_metadata_member": (lambda g: g.data[:100], "damaged", "truncated"),
    "metadata_not_json": (BAD["metadata_not_json"][0], "damaged", "not valid JSON"),
    "metadata_not_first": (BAD["metadata_not_first"][0], "damaged", METADATA),
}


@pytest.fixture
def listed_dir(good: GoodArchive, backup_dir: Path) -> Path:
    """A backup directory with one good archive and several damaged ones."""
    for name, (build, _, _) in LISTED.items():
        (backup_dir / f"{name}.tar.gz").write_bytes(build(good))
    return backup_dir


def test_list_shows_damaged_archives_with_reason(listed_dir: Path) -> None:
    """list_archives lists every archive: unreadable metadata -> status damaged with the reason."""
    listed = {a.name: a for a in list_archives(listed_dir)}
    assert set(listed) == set(LISTED)
    for name, (_, status, reason) in LISTED.items():
        assert listed[name].status.value == status, (name, listed[name].error)
        if status == "damaged":
            assert reason in (listed[name].error or ""), (name, listed[name].error)


def test_list_reads_only_the_metadata_member(good: GoodArchive, listed_dir: Path) -> None:
    """An archive cut right after its first gzip member, or with its database member corrupted,
    is still listed from its intact metadata (list never reads further), while verify fails."""
    listed = {a.name: a for a in list_archives(listed_dir)}
    for name in ("cut_after_metadata_member", "db_member_deflate_flipped", "db_member_crc_flipped"):
        assert listed[name].status.value == "verified", (name, listed[name].error)
        assert listed[name].databases == ("arrow", "user")
        with (
            pytest.raises(CorruptArchiveError),
            staging_area(listed_dir, purpose="verify") as area,
        ):
            verify_archive(listed_dir / f"{name}.tar.gz", staging=area)


def test_cli_list_shows_damaged_archives(listed_dir: Path, sidecar_env: Callable[..., Any]) -> None:
    """``list --json`` and the table list every archive, damaged ones with status and reason."""
    sidecar = sidecar_env()
    result = sidecar.run("list", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == set(LISTED)
    for name, (_, status, reason) in LISTED.items():
        assert rows[name]["status"] == status, rows[name]
        if status == "damaged":
            assert reason in rows[name]["error"], rows[name]
            assert rows[name]["verified"] is False
    table = sidecar.run("list")
    assert table.returncode == 0, table.stderr
    for name, (_, status, _) in LISTED.items():
        assert any(
            line.startswith(name + " ") and status in line for line in table.stdout.splitlines()
        ), name
