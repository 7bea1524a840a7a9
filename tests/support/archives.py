"""Every archive the tests build, good and hostile, shared by the archiver, reliability, daemon
and bad-input suites.

- Good archives are written through the real code path (``create_backup``): `backup_of`,
  `library_archive`, and `build_good`, the one good archive every bad one is derived from.
- Seed-format archives are written as the seed's ``backup_manager.py`` writes them
  (`seed_backup`: backup-API copies staged in a directory, metadata last, ``tar.add`` in
  ``iterdir()`` order).
- Bad and hostile archives are that good archive's bytes flipped, truncated or padded, or its
  real members re-packed by a foreign writer (Python's tarfile and gzip) around one fault:
  `BAD` (each fault the error must name), `HOSTILE` (inputs that once raised out of the
  reader), `ROTS` (bit rot of an archive on disk), gzip bombs (`zero_bomb`).
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
import tarfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backup_sidecar.archiver import ArchiveInfo, DatabaseSpec, create_backup
from support.databases import make_db

ARCHIVE = "daily_20260101_000000"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
METADATA = "backup_metadata.json"
ARROW, USER = "arrow_database.db", "user_data.db"
GZIP_HEADER = 10
GZIP_TRAILER = 8
#: The seed's archive name and time (naive local time, as the seed wrote it).
SEED_NAME = "archerytools_backup_20250804_163829"
SEED_TIME = datetime(2025, 8, 4, 16, 38, 29, 591353)

#: A builder of one bad archive from the good one.
Build = Callable[["GoodArchive"], bytes]


# --- archives written by the library ------------------------------------------------------------


def backup_of(
    databases: dict[str, Path],
    *,
    backup_dir: Path,
    name: str,
    policy: str = "manual",
    now: datetime = NOW,
    **options: Any,
) -> ArchiveInfo:
    """``create_backup`` of ``databases`` (name -> path); ``options`` go to it unchanged."""
    specs = [DatabaseSpec(db, path) for db, path in databases.items()]
    return create_backup(specs, backup_dir=backup_dir, name=name, policy=policy, now=now, **options)


def library_archive(backup_dir: Path, name: str, **databases: Path) -> Path:
    """An archive written by the library (set-up only; backups are tested elsewhere)."""
    return backup_of(databases, backup_dir=backup_dir, name=name).path


def manual_archives(backup_dir: Path, count: int, **databases: Path) -> Path:
    """``count`` manual archives of one content, `manual_20260101_000000` and hard links to it
    named one second apart (a large backup directory, quick to make); the first one's path."""
    one = library_archive(backup_dir, "manual_20260101_000000", **databases)
    for i in range(1, count):
        os.link(one, backup_dir / f"manual_20260101_{i:06d}.tar.gz")
    return one


def members_of(data: bytes) -> dict[str, bytes]:
    """Every member of a tar.gz (read by Python's tarfile), name -> content."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: _content(tar, m) for m in tar}


def _content(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    reader = tar.extractfile(member)
    assert reader is not None, member.name
    return reader.read()


def gnu_tar_names(archive: Path) -> list[str]:
    """The member names GNU tar lists (``tar -tzf``), in order."""
    listing = subprocess.run(
        ["tar", "-tzf", str(archive)], capture_output=True, text=True, check=True
    )
    return listing.stdout.splitlines()


def gnu_tar_extract(archive: Path, dest: Path) -> Path:
    """Every member extracted by GNU tar (``tar -xzf``) into the new directory ``dest``."""
    dest.mkdir()
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(dest)], capture_output=True, check=True)
    return dest


def archive_metadata(path: Path) -> dict[str, Any]:
    """The metadata member of a tar.gz, wherever it stands, as Python's tarfile reads it."""
    with tarfile.open(path, "r:gz") as tar:
        doc: dict[str, Any] = json.loads(_content(tar, tar.getmember(METADATA)))
    return doc


def second_member_offset(data: bytes) -> int:
    """Where the archive's second gzip member (the first database) starts."""
    first = zlib.decompressobj(31)
    first.decompress(data)
    return len(data) - len(first.unused_data)


# --- the good archive ---------------------------------------------------------------------------


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

    def specs(self) -> dict[str, DatabaseSpec]:
        """The source databases, as a restore's targets."""
        return {name: DatabaseSpec(name, path) for name, path in self.sources.items()}


def build_good(root: Path) -> GoodArchive:
    """A good archive of a rollback-journal ``arrow`` and a WAL ``user`` database of 50 rows
    each, built under the new directory ``root``."""
    root.mkdir(parents=True)
    arrow = make_db(root / ARROW, wal=False, rows=50)
    user = make_db(root / USER, wal=True, rows=50)
    backups = root / "backups"
    backups.mkdir()
    sources = {"arrow": arrow, "user": user}
    data = backup_of(sources, backup_dir=backups, name=ARCHIVE, policy="daily").path.read_bytes()
    members = members_of(data)
    metadata = json.loads(members.pop(METADATA))
    scratch = root / "scratch"
    scratch.mkdir()
    return GoodArchive(
        data=data,
        metadata=metadata,
        members=members,
        second_member=second_member_offset(data),
        first_deflate=data.index(b"\0", GZIP_HEADER) + 1,
        sources=sources,
        scratch=scratch,
    )


# --- tar and gzip pieces ------------------------------------------------------------------------


def regular(name: str, data: bytes, *, mode: int = 0o600) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info, data


def special(name: str, kind: bytes, **attrs: Any) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, b""


def tar_of(
    members: Sequence[tuple[tarfile.TarInfo, bytes]],
    *,
    fmt: int = tarfile.PAX_FORMAT,
    after_end: bytes = b"",
) -> bytes:
    """A tar written by Python's tarfile (a foreign writer), ``after_end`` after its end."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue() + after_end


def tar_gz(
    members: Sequence[tuple[tarfile.TarInfo, bytes]],
    *,
    fmt: int = tarfile.PAX_FORMAT,
    after_end: bytes = b"",
) -> bytes:
    """A single-member gzip of a tar written by Python's tarfile (a foreign writer)."""
    return gzip_of(tar_of(members, fmt=fmt, after_end=after_end))


def gzip_of(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def tar_header(name: str, size: int, *, pax: dict[str, str] | None = None) -> bytes:
    """One tar header as raw bytes (ustar; pax records first when given)."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    info.pax_headers = pax or {}
    return info.tobuf(tarfile.PAX_FORMAT)


def tar_member(name: str, data: bytes, *, pax: dict[str, str] | None = None) -> bytes:
    """One member (header + padded data) as raw bytes: the sizes need not match the data."""
    return tar_header(name, len(data), pax=pax) + data + b"\0" * (-len(data) % 512)


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """Raw members then the end-of-archive marker."""
    return b"".join(tar_member(name, data) for name, data in members) + b"\0" * 1024


def zero_bomb(head: bytes, *, zeros: int, tail: bytes = b"") -> bytes:
    """gzip(head + ``zeros`` zero bytes + tail), compressed at level 9 without holding the
    zeros in memory: a few hundred KiB that expand to ``zeros`` bytes."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = bytearray(comp.compress(head))
    block = b"\0" * (1 << 20)
    left = zeros
    while left:
        n = min(left, len(block))
        out += comp.compress(block[:n])
        left -= n
    out += comp.compress(tail) + comp.flush()
    return bytes(out)


def metadata_bytes(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=2).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def flip(data: bytes, offset: int, mask: int = 0xFF) -> bytes:
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


# --- bad archives: the good one with one fault --------------------------------------------------


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


def with_metadata(g: GoodArchive, **changes: Any) -> dict[str, Any]:
    """A copy of the good metadata with top-level keys changed."""
    doc: dict[str, Any] = json.loads(json.dumps(g.metadata))
    doc.update(changes)
    return doc


def with_db_entry(g: GoodArchive, db: str, **changes: Any) -> dict[str, Any]:
    doc = with_metadata(g)
    doc["databases"][db].update(changes)
    return doc


def with_user_member(g: GoodArchive, data: bytes) -> bytes:
    """The user database member replaced by ``data``, its metadata's sha256 to match."""
    return repack(g, metadata=with_db_entry(g, "user", sha256=sha256(data)), replace={USER: data})


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
    return with_user_member(g, (line * (size // len(line) + 1))[:size])


def fails_integrity(g: GoodArchive) -> bytes:
    return with_user_member(g, corrupt_table_page(g.members[USER], g.scratch))


def larger_than_metadata(g: GoodArchive) -> bytes:
    return with_user_member(g, g.members[USER] + b"\0" * 4096)


def good_members(g: GoodArchive) -> list[tuple[tarfile.TarInfo, bytes]]:
    """The good archive's database members, as tarfile members."""
    return [regular(n, d) for n, d in g.members.items()]


def hidden_after_end(g: GoodArchive) -> bytes:
    members = [regular(METADATA, metadata_bytes(g.metadata)), *good_members(g)]
    return tar_gz(members, after_end=b"hidden payload after the end-of-archive marker")


def metadata_not_first(g: GoodArchive) -> bytes:
    return tar_gz([*good_members(g), regular(METADATA, metadata_bytes(g.metadata))])


def duplicate(g: GoodArchive) -> bytes:
    return repack(g, extra=[regular(USER, g.members[USER])])


def user_as(kind: bytes, **attrs: Any) -> Build:
    """The user database member replaced by a member of another ``kind`` (link, device...)."""
    return lambda g: repack(g, drop=(USER,), extra=[special(USER, kind, **attrs)])


def with_entry(**changes: Any) -> Build:
    """The good archive, its user database's metadata entry changed."""
    return lambda g: repack(g, metadata=with_db_entry(g, "user", **changes))


#: name -> (builder, the fault the error must name)
BAD: dict[str, tuple[Build, str]] = {
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
    "symlink": (user_as(tarfile.SYMTYPE, linkname="/etc/passwd"), "symlink"),
    "hardlink": (user_as(tarfile.LNKTYPE, linkname=ARROW), "hard link"),
    "fifo": (user_as(tarfile.FIFOTYPE), "FIFO"),
    "char_device": (user_as(tarfile.CHRTYPE, devmajor=1, devminor=3), "device"),
    "block_device": (user_as(tarfile.BLKTYPE, devmajor=8, devminor=0), "device"),
    "directory": (lambda g: repack(g, extra=[special("x", tarfile.DIRTYPE)]), "directory"),
    "unexpected_member": (
        lambda g: repack(g, extra=[regular("notes.txt", b"hello")]),
        "unexpected member 'notes.txt'",
    ),
    "missing_database": (lambda g: repack(g, drop=(USER,)), f"missing member '{USER}'"),
    "duplicate_member": (duplicate, f"duplicate member '{USER}'"),
    "metadata_not_first": (metadata_not_first, f"not {METADATA}"),
    "metadata_missing": (lambda g: tar_gz(good_members(g)), METADATA),
    "metadata_not_json": (lambda g: repack(g, metadata=b"{not json at all"), "not valid JSON"),
    "metadata_not_object": (lambda g: repack(g, metadata=b"[1, 2, 3]"), "not a JSON object"),
    "metadata_size_as_string": (
        lambda g: repack(
            g, metadata=with_db_entry(g, "user", size_bytes=str(len(g.members[USER])))
        ),
        "databases.user.size_bytes",
    ),
    "metadata_sha256_not_hex": (with_entry(sha256="not-a-digest"), "databases.user.sha256"),
    "metadata_snapshot_seconds_negative": (
        with_entry(snapshot_seconds=-1),
        "databases.user.snapshot_seconds",
    ),
    "metadata_file_traversal": (with_entry(file="../x"), "databases.user.file"),
    "not_sqlite": (not_sqlite, f"'{USER}' is not an SQLite database"),
    "fails_integrity_check": (fails_integrity, f"'{USER}' fails integrity_check"),
    "sha256_mismatch": (with_entry(sha256="0" * 64), f"'{USER}': sha256 mismatch"),
    "member_larger_than_metadata": (larger_than_metadata, "metadata says"),
    "data_after_end_marker": (hidden_after_end, "after the end of the tar archive"),
}

#: The CLI runs one case per kind of fault (its start-up costs ~0.6 s of CPU per run); the
#: library tests cover every variant.
CLI_CASES = (
    "flipped_database_deflate", "truncated_in_database", "trailing_garbage",
    "trailing_zero_block", "zero_length", "not_gzip", "gzip_of_not_tar", "member_dotdot",
    "member_absolute", "symlink", "hardlink", "fifo", "char_device", "unexpected_member",
    "missing_database", "duplicate_member", "metadata_not_first", "metadata_not_json",
    "metadata_size_as_string", "not_sqlite", "fails_integrity_check", "sha256_mismatch",
    "member_larger_than_metadata", "data_after_end_marker",
)  # fmt: skip


# --- hostile archives: inputs that once raised out of the reader --------------------------------

DEPTH = 100_000
DIGITS = 4_301
EMPTY_MEMBERS = 3_000


def deeply_nested(g: GoodArchive) -> bytes:
    """The good metadata with an extra key holding a list nested 100,000 levels deep."""
    head = metadata_bytes(g.metadata)
    return repack(g, metadata=b'{"x": ' + b"[" * DEPTH + b"]" * DEPTH + b", " + head[1:])


def huge_number(g: GoodArchive) -> bytes:
    """The good metadata with an extra key holding a 4,301-digit integer."""
    head = metadata_bytes(g.metadata)
    return repack(g, metadata=b'{"x": ' + b"9" * DIGITS + b", " + head[1:])


def pax_size(value: str) -> Build:
    """The metadata member's size given by a pax ``size`` record of ``value``."""

    def build(g: GoodArchive) -> bytes:
        meta_info, meta = regular(METADATA, metadata_bytes(g.metadata))
        meta_info.pax_headers = {"size": value}
        return tar_gz([(meta_info, meta), *good_members(g)])

    return build


def empty_members(n: int, *, where: str = "between") -> Build:
    """The good archive with ``n`` empty gzip members before its first member or between its
    metadata member and its database member."""

    def build(g: GoodArchive) -> bytes:
        empties = gzip.compress(b"", mtime=0) * n
        if where == "before":
            return empties + g.data
        return g.data[: g.second_member] + empties + g.data[g.second_member :]

    return build


def one_byte_members(n: int) -> Build:
    """The good archive with the part after its metadata member re-gzipped as ``n - 2`` one-byte
    gzip members and one member holding the rest: ``n`` members in all, same content."""

    def build(g: GoodArchive) -> bytes:
        rest = gzip.decompress(g.data[g.second_member :])
        tiny = [gzip.compress(bytes([b]), mtime=0) for b in range(256)]
        head = b"".join(tiny[b] for b in rest[: n - 2])
        return g.data[: g.second_member] + head + gzip.compress(rest[n - 2 :], mtime=0)

    return build


def created_at(text: str) -> Build:
    """The good archive, its metadata's ``created_at`` set to ``text``."""
    return lambda g: repack(g, metadata=with_metadata(g, created_at=text))


#: name -> (builder, a regular expression for the fault the error must name). Each raised
#: something other than CorruptArchiveError before the fix, bar the extra pax sizes and the
#: empty members before the metadata (already refused, kept to pin the new messages).
HOSTILE: dict[str, tuple[Build, str]] = {
    "metadata_nested_100000_deep": (deeply_nested, "nested too deeply"),
    "metadata_number_of_4301_digits": (huge_number, "4300 digits"),
    "pax_size_abc": (pax_size("abc"), "size 'abc' is not a number"),
    "pax_size_with_underscore": (pax_size("1_0"), "size '1_0' is not a number"),
    "pax_size_of_40_digits": (pax_size("9" * 40), "size '9+' is not a number"),
    "empty_gzip_members_before_metadata": (
        empty_members(EMPTY_MEMBERS, where="before"),
        "tar stream ends|empty gzip members",
    ),
    "created_at_0001_01_01_plus_14h": (created_at("0001-01-01T00:00+14:00"), "out of range"),
    "created_at_9999_12_31_minus_14h": (
        created_at("9999-12-31T23:59:59.999999-14:00"),
        "out of range",
    ),
    "metadata_nan": (
        lambda g: repack(g, metadata=metadata_bytes(g.metadata).replace(b"{", b'{"x": NaN,', 1)),
        "NaN is not a JSON number",
    ),
}

#: Hostile archives built from nothing: name -> their bytes.
HOSTILE_BYTES: dict[str, bytes] = {
    "metadata_nested_100000_deep": gzip.compress(tar_bytes([(METADATA, b"[" * 100_000)])),
    "3000_empty_gzip_members": gzip.compress(b"") * 3000,
    "pax_size_not_a_number": gzip.compress(
        tar_member(USER, b"x", pax={"size": "abc"}) + b"\0" * 1024
    ),
    "huge_number_in_metadata": gzip.compress(
        tar_bytes([(METADATA, b'{"backup_name": ' + b"9" * 5000 + b"}")])
    ),
}


# --- bit rot of an archive on disk --------------------------------------------------------------


def truncate(path: Path) -> str:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 700])
    return "truncated"


def flip_database_byte(path: Path) -> str:
    data = path.read_bytes()
    start = second_member_offset(data)
    path.write_bytes(flip(data, start + (len(data) - start) // 2, 0x55))
    return "flipped"


def reflow_database_byte(path: Path) -> str:
    """One byte of the database changed *before* compression: every gzip CRC is valid, only the
    SHA-256 the metadata recorded can tell."""
    members = members_of(path.read_bytes())
    for name, body in members.items():
        if name != METADATA:
            members[name] = flip(body, len(body) - 100, 1)
    path.write_bytes(tar_gz([regular(n, d, mode=0o644) for n, d in members.items()]))
    return "reflowed"


#: name -> what rots an archive file in place (returns what it did)
ROTS: dict[str, Callable[[Path], str]] = {
    "truncated": truncate,
    "flipped_database_byte": flip_database_byte,
    "database_changed_under_valid_gzip": reflow_database_byte,
}


# --- the seed's archives ------------------------------------------------------------------------


def seed_doc(
    *,
    arrow: bool,
    user: bool,
    name: str = SEED_NAME,
    created: str = SEED_TIME.isoformat(),
) -> dict[str, Any]:
    """The seed's metadata: no format_version, no databases, no checksums."""
    return {
        "backup_name": name,
        "created_at": created,
        "version": "1.0.0",
        "includes": {"arrow_database": arrow, "user_database": user},
    }


def seed_metadata(**includes: bool) -> bytes:
    """The seed's backup_metadata.json holding ``arrow`` and/or ``user`` (default: user only)."""
    return metadata_bytes(
        seed_doc(arrow=includes.get("arrow", False), user=includes.get("user", True))
    )


def seed_db_stats(db_path: Path) -> dict[str, Any]:
    """The seed's ``_get_db_stats``: unrounded size, table count, per-table row counts."""
    try:
        conn = sqlite3.connect(db_path)
        cursor = conn.cursor()
        cursor.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
        )
        tables = [row[0] for row in cursor.fetchall()]
        table_info: dict[str, Any] = {}
        for table in tables:
            try:
                cursor.execute(f"SELECT COUNT(*) FROM {table}")
                table_info[table] = cursor.fetchone()[0]
            except sqlite3.Error:
                table_info[table] = "unknown"
        conn.close()
        return {
            "file_size_mb": db_path.stat().st_size / (1024 * 1024),
            "table_count": len(tables),
            "tables": table_info,
        }
    except Exception as exc:  # noqa: BLE001  # the seed's own catch-all
        return {"error": str(exc)}


def seed_copy(source: Path, dest: Path) -> None:
    """The seed's copy of a database: the backup API, in one step."""
    source_conn = sqlite3.connect(source)
    backup_conn = sqlite3.connect(dest)
    source_conn.backup(backup_conn)
    backup_conn.close()
    source_conn.close()


def seed_backup(
    backup_dir: Path,
    *,
    arrow: Path | None,
    user: Path | None,
    name: str = SEED_NAME,
    order: Sequence[str] | None = None,
) -> Path:
    """``BackupManager.create_backup`` of the seed: ``arrow``/``user`` None means not asked
    for; a path that does not exist is asked for (``includes`` true) but not stored. With
    ``order`` the staged files are added in that order instead of ``iterdir()``'s."""
    temp_dir = backup_dir / f"temp_{name}"
    temp_dir.mkdir(exist_ok=True)
    metadata = seed_doc(arrow=arrow is not None, user=user is not None, name=name)
    if arrow is not None and arrow.exists():
        seed_copy(arrow, temp_dir / ARROW)
        metadata["arrow_db_stats"] = seed_db_stats(arrow)
    if user is not None and user.exists():
        seed_copy(user, temp_dir / USER)
        metadata["user_db_stats"] = seed_db_stats(user)
    with (temp_dir / METADATA).open("w") as f:
        json.dump(metadata, f, indent=2)
    backup_path = backup_dir / f"{name}.tar.gz"
    files = list(temp_dir.iterdir()) if order is None else [temp_dir / n for n in order]
    assert sorted(f.name for f in files) == sorted(p.name for p in temp_dir.iterdir())
    with tarfile.open(backup_path, "w:gz") as tar:
        for file_path in files:
            tar.add(file_path, arcname=file_path.name)
    shutil.rmtree(temp_dir)
    return backup_path


def seed_like(members: list[tuple[str, bytes]]) -> bytes:
    """A tar.gz of these members as GNU tar would pack them (for archives the seed cannot
    write: no metadata, duplicates, other members)."""
    return tar_gz([regular(n, d, mode=0o644) for n, d in members], fmt=tarfile.GNU_FORMAT)


def seed_bomb(*, user_bytes: int, metadata_first: bool) -> bytes:
    """A seed-format archive of ~100 KiB whose user database member is ``user_bytes`` zeros,
    its metadata before it or after it (the seed's tar may put it anywhere)."""
    meta = tar_member(METADATA, seed_metadata(user=True))
    db_head = tar_header(USER, user_bytes)
    end = b"\0" * 1024
    if metadata_first:
        return zero_bomb(meta + db_head, zeros=user_bytes, tail=end)
    return zero_bomb(db_head, zeros=user_bytes, tail=meta + end)
