"""A backup's manifest: where every page of its image is, and what the whole image hashes to.

Pages are named by runs, ``[first_pgno, count, pack, first_slot]``: pages first_pgno ..
first_pgno+count-1 are slots first_slot.. of that pack. A page's content is the SHA-256 that
the pack's index records for the slot (the rebuild checks it), so an unchanged page costs a
manifest nothing and a backup of an unchanged database writes a manifest of a few runs, not a
hash per page. Parsing is strict: any malformed manifest is one ManifestFormatError.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from backup_sidecar.errors import ManifestFormatError, PageBackupNameError
from backup_sidecar.pagestore.header import DbHeader
from backup_sidecar.pagestore.packformat import zstd

FORMAT = "backup-sidecar-pages"
FORMAT_VERSION = 2
#: Versions read: 1 kept the runs as JSON lists (``runs``), 2 packs them (``runs_zstd``).
READ_VERSIONS = (1, 2)
_RUNS_LEVEL = 9
SUFFIX = ".json"
MAX_BYTES = 256 << 20
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PACK_ID = re.compile(r"[0-9a-f]{32}")


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise PageBackupNameError(name)
    return name


def manifest_file(name: str) -> str:
    return check_name(name) + SUFFIX


@dataclass(frozen=True)
class Run:
    first_pgno: int
    count: int
    pack: str
    first_slot: int


@dataclass(frozen=True)
class Manifest:
    name: str
    created_at: str
    page_size: int
    page_count: int
    image_sha256: str
    header: DbHeader
    runs: tuple[Run, ...]
    stats: Mapping[str, int] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: The SHA-256 of each earlier version of this file a repack replaced (repack.py): a copy
    #: of one of them (offsite) is a copy of this very backup.
    replaces: tuple[str, ...] = ()

    @property
    def image_size(self) -> int:
        return self.page_size * self.page_count

    @property
    def packs(self) -> frozenset[str]:
        return frozenset(r.pack for r in self.runs)

    def locations(self) -> Iterator[tuple[int, str, int]]:
        """(pgno, pack, slot) for every page, in page order."""
        for r in self.runs:
            for i in range(r.count):
                yield r.first_pgno + i, r.pack, r.first_slot + i

    def to_bytes(self) -> bytes:
        packs = sorted(self.packs)
        number = {p: i for i, p in enumerate(packs)}
        doc = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "created_at": self.created_at,
            "page_size": self.page_size,
            "page_count": self.page_count,
            "image_size": self.image_size,
            "image_sha256": self.image_sha256,
            "header": self.header.to_json(),
            "packs": packs,
            "runs_zstd": encode_runs(self.runs, number),
            "stats": dict(self.stats),
            "metadata": dict(self.metadata),
        }
        if self.replaces:
            doc["replaces"] = list(self.replaces)
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode() + b"\n"


def runs_of(locations: list[tuple[str, int]]) -> tuple[Run, ...]:
    """Runs for pages 1..N at ``locations[pgno - 1]`` = (pack, slot)."""
    runs: list[Run] = []
    first, count, pack, slot0 = 1, 0, "", 0
    for pgno, (p, slot) in enumerate(locations, start=1):
        if count and p == pack and slot == slot0 + count:
            count += 1
            continue
        if count:
            runs.append(Run(first, count, pack, slot0))
        first, count, pack, slot0 = pgno, 1, p, slot
    if count:
        runs.append(Run(first, count, pack, slot0))
    return tuple(runs)


def encode_runs(runs: tuple[Run, ...], number: Mapping[str, int]) -> str:
    """The runs packed: three columns of little-endian 32-bit integers (count, pack number,
    first slot as the distance from where that pack's previous run ended), zstd, base64. The
    runs of a chain's head after a day of writes are 100,000s of short runs (a changed page
    here and there): as JSON lists they made a 2-3 MB manifest, ~9x to ~19x more than this."""
    n = len(runs)
    ends: dict[str, int] = {}
    gaps = []
    for r in runs:
        gaps.append(r.first_slot - ends.get(r.pack, 0))
        ends[r.pack] = r.first_slot + r.count
    counts = [r.count for r in runs]
    packs = [number[r.pack] for r in runs]
    raw = struct.pack(f"<I{n}I{n}I{n}i", n, *counts, *packs, *gaps)
    return base64.b64encode(zstd.compress(raw, level=_RUNS_LEVEL)).decode("ascii")


def decode_runs(text: object, packs: list[str], page_count: int) -> tuple[Run, ...]:
    """``encode_runs`` undone and checked like ``_parse_runs`` (every run at least one page,
    a known pack, a slot >= 0, pages 1..page_count exactly); ValueError naming the fault."""
    if not isinstance(text, str):
        raise ValueError("'runs_zstd' is not a string")
    try:
        packed = base64.b64decode(text.encode("ascii"), validate=True)
        d = zstd.ZstdDecompressor()
        raw = d.decompress(packed, max_length=4 + 12 * page_count + 1)
        complete = d.eof and not d.unused_data
    except (zstd.ZstdError, binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(f"'runs_zstd' cannot be unpacked: {exc}") from None
    n = (len(raw) - 4) // 12
    if (
        not complete
        or len(raw) < 4
        or struct.unpack_from("<I", raw)[0] != n
        or len(raw) != 4 + 12 * n
    ):
        raise ValueError("'runs_zstd' does not hold its count of runs")
    cols = struct.unpack_from(f"<{n}I{n}I{n}i", raw, 4)
    counts, numbers, gaps = cols[:n], cols[n : 2 * n], cols[2 * n :]
    if n and (min(counts) < 1 or max(numbers) >= len(packs)):
        raise ValueError("'runs_zstd' holds an empty run or names no pack")
    runs = []
    ends: dict[int, int] = {}
    pgno = 1
    for count, number, gap in zip(counts, numbers, gaps, strict=True):
        slot = ends.get(number, 0) + gap
        if slot < 0:
            raise ValueError(f"'runs_zstd': the run at page {pgno} has slot {slot}")
        runs.append(Run(pgno, count, packs[number], slot))
        ends[number] = slot + count
        pgno += count
    if pgno != page_count + 1:
        raise ValueError(f"'runs_zstd' covers {pgno - 1} pages, not page_count {page_count}")
    return tuple(runs)


def parse_manifest(name: str, data: bytes) -> Manifest:
    """The manifest ``name`` from its bytes; ManifestFormatError naming the fault."""
    try:
        return _parse(name, data)
    except (ValueError, TypeError, KeyError, RecursionError, OverflowError) as exc:
        raise ManifestFormatError(name, str(exc) or type(exc).__name__) from None


def _int(doc: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    v = doc.get(key)
    if type(v) is not int or not lo <= v <= hi:
        raise ValueError(f"{key!r} is not an integer in {lo}..{hi}")
    return v


def _parse(name: str, data: bytes) -> Manifest:
    doc = json.loads(data.decode("utf-8"))
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} manifest")
    version = doc.get("format_version")
    if version not in READ_VERSIONS or type(version) is not int:
        raise ValueError(f"format_version {version!r} is not one of {READ_VERSIONS}")
    if doc.get("name") != name:
        raise ValueError(f"'name' is {doc.get('name')!r}, not the file's name")
    page_size = _int(doc, "page_size", 512, 65536)
    page_count = _int(doc, "page_count", 1, 1 << 32)
    sha = doc.get("image_sha256")
    if not isinstance(sha, str) or not _HEX64.fullmatch(sha):
        raise ValueError("'image_sha256' is not 64 lowercase hex digits")
    packs = doc.get("packs")
    if not isinstance(packs, list) or not all(
        isinstance(p, str) and _PACK_ID.fullmatch(p) for p in packs
    ):
        raise ValueError("'packs' is not a list of pack ids")
    if version == 1:
        runs = _parse_runs(doc.get("runs"), packs, page_count)
    else:
        runs = decode_runs(doc.get("runs_zstd"), packs, page_count)
    created, stats, meta = doc.get("created_at"), doc.get("stats"), doc.get("metadata")
    if not isinstance(created, str):
        raise ValueError("'created_at' is not a string")
    datetime.fromisoformat(created)
    if not isinstance(stats, dict) or not all(type(v) is int for v in stats.values()):
        raise ValueError("'stats' is not an object of integers")
    if not isinstance(meta, dict):
        raise ValueError("'metadata' is not an object")
    header = DbHeader.from_json(doc.get("header"))
    replaces = doc.get("replaces", [])
    if not isinstance(replaces, list) or not all(
        isinstance(r, str) and _HEX64.fullmatch(r) for r in replaces
    ):
        raise ValueError("'replaces' is not a list of SHA-256 hex digests")
    return Manifest(
        name, created, page_size, page_count, sha, header, runs, stats, meta, tuple(replaces)
    )


def _parse_runs(raw: object, packs: list[str], page_count: int) -> tuple[Run, ...]:
    if not isinstance(raw, list):
        raise ValueError("'runs' is not a list")
    runs: list[Run] = []
    next_pgno = 1
    for i, item in enumerate(raw):
        if not (isinstance(item, list) and len(item) == 4 and all(type(v) is int for v in item)):
            raise ValueError(f"runs[{i}] is not 4 integers")
        first, count, pack, slot = item
        if first != next_pgno or count < 1 or slot < 0 or not 0 <= pack < len(packs):
            raise ValueError(f"runs[{i}] does not continue the pages at {next_pgno}")
        runs.append(Run(first, count, packs[pack], slot))
        next_pgno = first + count
    if next_pgno != page_count + 1:
        raise ValueError(f"'runs' cover {next_pgno - 1} pages, not page_count {page_count}")
    return tuple(runs)
