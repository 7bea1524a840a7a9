"""A structure-aware fuzzer of archives: hostile JSON inside hostile tar inside hostile gzip.

Byte flips of a good archive (test_bad_archives.py) almost always stop at the gzip CRC, so they
never reach the tar and JSON parsers behind it. Here hypothesis builds each layer itself and
compresses it properly, so every layer's parser sees hostile input:

- JSON: the good format-2 metadata or the seed's legacy one, with keys dropped or set to raw
  JSON text: nesting far past the recursion limit, integers of 4,300+ digits, NaN/Infinity,
  1e400, wrong types, long strings, and times at datetime's ends with odd UTC offsets.
- tar: ustar, GNU and pax headers with hostile pax records (``size=abc``, negative, huge,
  bad record lengths, non-UTF-8), declared sizes that disagree with the data, odd member types
  and names, the metadata anywhere, members dropped, duplicated or truncated, flipped header
  bytes, no end marker or data after it.
- gzip: the tar split into several members, with up to 40 empty members anywhere, then a
  truncation, a few flipped bytes or trailing bytes.

Whatever it builds, listing the directory must not raise and must still show the good
archive verified; ``read_manifest`` and ``verify_archive`` may only accept the file or raise
its own CorruptArchiveError. The run is deterministic (``derandomize``, no example database)
with a fixed number of examples and no per-example deadline, so a loaded CI machine is slower,
never flaky.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backup_sidecar import jobs
from backup_sidecar.archiver import (
    ArchiveStatus,
    Limits,
    list_archives,
    read_manifest,
    select_expired,
    staging_area,
    verify_archive,
)
from backup_sidecar.errors import CorruptArchiveError
from support.archives import ARCHIVE, METADATA, USER, GoodArchive, seed_doc
from support.fuzzing import FUZZ

HOSTILE = "daily_20250101_000000"
#: Anything expanding past this is the archive's fault (the disk has more room than this), so
#: verify's only possible refusal is CorruptArchiveError, never "not enough free space".
LIMITS = Limits(max_total_bytes=64 << 20)
EXAMPLES = 300
_RAW = "\x00raw{}\x00"


# --- JSON -------------------------------------------------------------------------------------

EDGE_TIMES = [
    "0001-01-01T00:00+14:00",
    "0001-01-01T00:00:00-14:00",
    "0001-01-01T00:00:00",
    "9999-12-31T23:59:59.999999",
    "9999-12-31T23:59:59.999999-14:00",
    "9999-12-31T23:59:59.999999+05:45:30",
    "2026-02-30T00:00:00",
    "2026-01-01T24:00:00",
    "",
]
OFFSETS = ["", "Z", "+00:00", "+14:00", "-14:00", "+05:45:30", "-23:59:59.999999", "+23:59"]

times = st.one_of(
    st.sampled_from(EDGE_TIMES),
    st.builds(
        lambda moment, offset: moment.isoformat() + offset,
        st.datetimes(min_value=datetime.min, max_value=datetime.max),
        st.sampled_from(OFFSETS),
    ),
)

raw_values = st.one_of(
    st.sampled_from(
        [
            "[" * 100_000 + "]" * 100_000,
            '{"a": ' * 3_000 + "1" + "}" * 3_000,
            "9" * 4_301,
            "-" + "9" * 5_000,
            "0." + "9" * 5_000,
            "1e400",
            "-1e400",
            "NaN",
            "Infinity",
            "-Infinity",
            "null",
            "true",
            "[]",
            "{}",
            '""',
            '"' + "x" * 70_000 + '"',
            '"\\u0000\\n\\ud800"',
            "2147483648",
            "18446744073709551616",
            "-1",
            "0",
            "1.5",
            "4096",
        ]
    ),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    times.map(json.dumps),
    st.text(max_size=30).map(json.dumps),
)


def key_paths(doc: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path of ``doc`` (objects only), outermost first."""
    paths = []
    for key, value in doc.items():
        paths.append((*prefix, key))
        if isinstance(value, dict):
            paths.extend(key_paths(value, (*prefix, key)))
    return paths


def legacy_doc(g: GoodArchive) -> dict[str, Any]:
    """The seed's metadata: no format_version, no databases, both includes flags set."""
    return seed_doc(arrow=True, user=True, name=ARCHIVE, created="2026-01-01T00:00:00")


@st.composite
def metadata(draw: st.DrawFn, g: GoodArchive) -> bytes:
    """The good (format 2 or legacy) metadata with some keys dropped or set to raw JSON."""
    doc = json.loads(json.dumps(g.metadata)) if draw(st.booleans()) else legacy_doc(g)
    raws: list[str] = []
    paths = [*key_paths(doc), ("created_at",), ("extra",), ("databases", "user", "extra")]
    count = draw(st.sampled_from([0, 0, 0, 0, 0, 1, 1, 2, 3]))
    for path in draw(st.lists(st.sampled_from(paths), min_size=count, max_size=count)):
        parent = doc
        for key in path[:-1]:
            child = parent.get(key)
            if not isinstance(child, dict):
                break
            parent = child
        else:
            if draw(st.integers(0, 4)) == 0:
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = _RAW.format(len(raws))
                raws.append(draw(raw_values))
    text = json.dumps(doc, indent=draw(st.sampled_from([None, 2])))
    for i, raw in enumerate(raws):
        text = text.replace(json.dumps(_RAW.format(i)), raw)
    return text.encode("utf-8", "surrogatepass")


# --- tar --------------------------------------------------------------------------------------

pax_records = st.dictionaries(
    st.sampled_from(["size", "path", "mtime", "linkpath", "uid", "hdrcharset", "comment"]),
    st.one_of(
        st.sampled_from(["abc", "-1", "", "1_0", " 12", "9" * 40, "0x10", "\u0661\u0662", "1e3"]),
        st.integers(0, 1 << 70).map(str),
        st.text(max_size=20),
    ),
    max_size=3,
)

raw_pax = st.sampled_from(
    [
        b"3 a\n",
        b"0 size=1\n",
        b"-5 size=1\n",
        b" 12 size=1\n",
        b"99999999999999999999 size=1\n",
        b"12 size=\xff\xfe\n",
        b"11 size=12",
        b"9 size=1\n\n",
        b"12 nosuchsep\n",
        b"13 =emptykey\n",
        b"1" * 5000,
    ]
)


def rarely(draw: st.DrawFn, one_in: int) -> bool:
    return draw(st.integers(0, one_in - 1)) == 0


@st.composite
def member(draw: st.DrawFn, name: str, data: bytes) -> bytes:
    """One tar member: a header (ustar, GNU or pax) then data and padding; one in five is
    hostile (odd name, type or declared size, hostile pax records, flipped header bytes)."""
    hostile = rarely(draw, 5)
    info = tarfile.TarInfo(name)
    info.mode = 0o600
    info.size = len(data)
    formats: list[Literal[0, 1, 2]] = [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT]
    fmt = draw(st.sampled_from(formats))
    flips: list[tuple[int, int]] = []
    if hostile:
        if rarely(draw, 3):
            info.name = draw(st.text(max_size=120))
        info.mtime = draw(st.sampled_from([0, -1, 2**33, 8**11]))
        if rarely(draw, 3):
            kinds = [tarfile.AREGTYPE, tarfile.SYMTYPE, tarfile.DIRTYPE, tarfile.FIFOTYPE,
                     tarfile.GNUTYPE_LONGNAME, b"Z"]  # fmt: skip
            info.type = draw(st.sampled_from(kinds))
        if rarely(draw, 3):
            data = data[: draw(st.integers(0, len(data)))]
        if rarely(draw, 3):
            info.size = draw(
                st.one_of(
                    st.integers(0, len(data) + 2048),
                    st.sampled_from([8**11, 2**40, 2**63, 2**70]),
                )
            )
        if fmt == tarfile.PAX_FORMAT:
            info.pax_headers = draw(pax_records)
    try:
        header = info.tobuf(fmt, "utf-8", "surrogateescape")
    except (ValueError, UnicodeError):  # the format cannot hold it: a plain pax header
        info.size, info.name, info.pax_headers = len(data), name, {}
        header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")
    if hostile and rarely(draw, 3):
        header = _raw_pax_header(draw(raw_pax)) + header
    if hostile and rarely(draw, 4):
        offsets = st.integers(0, len(header) - 1)
        flips = draw(st.lists(st.tuples(offsets, st.integers(1, 255)), min_size=1, max_size=2))
    header = _flip(header, flips)
    return header + data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)


def _raw_pax_header(records: bytes) -> bytes:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = len(records)
    return info.tobuf(tarfile.USTAR_FORMAT) + records + b"\0" * (-len(records) % tarfile.BLOCKSIZE)


def _flip(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for offset, mask in flips:
        if offset < len(out):
            out[offset] ^= mask
    return bytes(out)


@st.composite
def tar_stream(draw: st.DrawFn, g: GoodArchive) -> bytes:
    """The metadata member (first, usually), the database members (some dropped, duplicated or
    junk), perhaps an extra member, then the end marker, none, or data after it."""
    parts = [(METADATA, draw(metadata(g)))]
    for name, data in g.members.items():
        if rarely(draw, 8):
            continue
        junk = [b"", b"SQLite format 3\0" + b"\xff" * 4080, data[:100]]
        parts.append((name, draw(st.sampled_from(junk)) if rarely(draw, 8) else data))
    if rarely(draw, 8):
        parts.append(draw(st.sampled_from([(USER, g.members[USER]), ("notes.txt", b"hello")])))
    if rarely(draw, 8):
        parts = draw(st.permutations(parts))
    body = b"".join(draw(member(name, data)) for name, data in parts)
    end = draw(
        st.sampled_from(
            [b"\0" * 1024] * 8 + [b"", b"\0" * 512, b"\0" * 1024 + b"hidden", b"\0" * 4096]
        )
    )
    return body + end


# --- gzip -------------------------------------------------------------------------------------


@st.composite
def gzip_stream(draw: st.DrawFn, tar: bytes) -> bytes:
    """The tar cut into gzip members at random points, with empty members in between, then
    perhaps truncated, flipped or followed by trailing bytes."""
    cuts = sorted(draw(st.lists(st.integers(0, len(tar)), max_size=3)))
    pieces = [tar[a:b] for a, b in zip([0, *cuts], [*cuts, len(tar)], strict=True)]
    level = draw(st.sampled_from([0, 1, 6, 9]))
    members = [gzip.compress(p, compresslevel=level, mtime=0) for p in pieces]
    empty = gzip.compress(b"", mtime=0)
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 0, 1, 16, 17, 40]))):
        members.insert(draw(st.integers(0, len(members))), empty)
    data = b"".join(members)
    mutation = draw(st.sampled_from(["none"] * 5 + ["truncate", "flip", "trail"]))
    if mutation == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif mutation == "flip":
        flips = draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(1, 255)),
                              min_size=1, max_size=3))  # fmt: skip
        data = _flip(data, flips)
    elif mutation == "trail":
        data += draw(st.sampled_from([b"\0", b"\x1f\x8b", b"garbage", empty[:-1], b"\0" * 512]))
    return data


class Blob(bytes):
    """Archive bytes that hypothesis reports by size and digest: a failing example of 200 kB
    would otherwise be reported as "overly large repr" (a warning, an error here)."""

    def __repr__(self) -> str:
        return f"<{len(self)} bytes, sha256 {hashlib.sha256(self).hexdigest()[:16]}>"


@st.composite
def hostile_archives(draw: st.DrawFn, g: GoodArchive) -> Blob:
    return Blob(draw(gzip_stream(draw(tar_stream(g)))))


# --- the property -----------------------------------------------------------------------------


def check_directory(backup_dir: Path, data: bytes) -> list[str]:
    """List, read and verify a directory holding the good archive and ``data``; the faults
    found (listing, verify)."""
    path = backup_dir / f"{HOSTILE}.tar.gz"
    path.write_bytes(data)
    archives = list_archives(backup_dir)
    by_name = {a.name: a for a in archives}
    assert by_name[ARCHIVE].status is ArchiveStatus.VERIFIED
    hostile = by_name[HOSTILE]
    faults = []
    if hostile.status is ArchiveStatus.DAMAGED:
        assert hostile.error and "\n" not in hostile.error, hostile.error
        faults.append(hostile.error)
    for a in archives:
        assert a.created_at.astimezone(UTC).utcoffset() is not None
        assert jobs.archive_json(a)["status"] == a.status.value
    select_expired(archives, keep={a.policy: 1 for a in archives})
    try:
        read_manifest(path)
    except CorruptArchiveError as exc:
        assert exc.archive == HOSTILE
    try:
        with staging_area(backup_dir, purpose="verify") as area:
            verify_archive(path, staging=area, limits=LIMITS)
    except CorruptArchiveError as exc:
        assert exc.archive == HOSTILE
        assert "\n" not in exc.fault, exc.fault
        faults.append(exc.fault)
    assert not any((backup_dir / ".staging").iterdir())
    return faults


def test_fuzzed_archives_are_accepted_or_corrupt_and_never_stop_a_listing(
    good: GoodArchive, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Hypothesis-built hostile archives (JSON, tar and gzip layers, see the module docstring):
    listing a directory holding one never raises and still shows the good archive verified;
    read_manifest and verify raise nothing but the hostile archive's CorruptArchiveError."""
    backup_dir = tmp_path_factory.mktemp("fuzzdir")
    (backup_dir / f"{ARCHIVE}.tar.gz").write_bytes(good.data)
    outcomes: dict[str, int] = {}
    faults: list[str] = []

    @settings(FUZZ, max_examples=EXAMPLES)
    @given(hostile_archives(good))
    def check(data: bytes) -> None:
        faults.extend(check_directory(backup_dir, data))
        status = {a.name: a.status for a in list_archives(backup_dir)}[HOSTILE]
        outcomes[status.value] = outcomes.get(status.value, 0) + 1

    check()
    # The fuzzer reaches past the gzip layer: some archives list, some are damaged.
    assert outcomes.get("damaged", 0) > EXAMPLES // 2, outcomes
    assert outcomes.get("verified", 0) + outcomes.get("legacy", 0) > EXAMPLES // 20, outcomes
    # ... and each parser refuses something: gzip, tar, pax records, the JSON and its keys.
    layers = {
        "gzip": ("gzip", "empty file"),
        "tar": ("tar stream", "tar header", "member '"),
        "pax": ("pax header",),
        "JSON": (f"{METADATA} is",),
        "keys": ("key '",),
    }
    for layer, marks in layers.items():
        assert any(m in f for f in faults for m in marks), (layer, sorted(set(faults)))
