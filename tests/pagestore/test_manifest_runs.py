"""A manifest packs its runs: a chain head's 100,000s of short runs stay a small file, read back
exactly; version 1 manifests (runs as JSON lists) still read; a damaged packing is one error."""

from __future__ import annotations

import base64
import dataclasses
import json
import random
from pathlib import Path

import pytest

from backup_sidecar.errors import ManifestFormatError
from backup_sidecar.pagestore.manifest import Manifest, Run, parse_manifest
from support.databases import make_db
from support.pages import backup

PACKS = [f"{i:032x}" for i in range(1, 40)]


def _fragmented(m: Manifest, runs: int) -> Manifest:
    """``m`` naming ``runs`` short runs spread over 39 packs, like a day of scattered writes."""
    rng = random.Random(7)
    out, pgno, next_slot = [], 1, dict.fromkeys(PACKS, 0)
    for _ in range(runs):
        pack = rng.choice(PACKS)
        count = rng.choice([1, 1, 1, 2, 3, 40])
        next_slot[pack] += rng.choice([0, 0, 1, 7])
        out.append(Run(pgno, count, pack, next_slot[pack]))
        next_slot[pack] += count
        pgno += count
    return dataclasses.replace(m, runs=tuple(out), page_count=pgno - 1)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    tmp = tmp_path_factory.mktemp("runs")
    return backup(make_db(tmp / "live.db", wal=False, rows=300), tmp / "store", "b0")


def test_a_fragmented_manifest_is_small_and_reads_back_exactly(small: Manifest) -> None:
    """150,000 short runs (a chain head after a day of scattered writes) take under 8 bytes
    a run in the manifest file (as JSON lists they took ~19: 2.9 MB for hour 24 of the bench's
    hourly chain, which every later backup of the unchanged database wrote again), and
    parse back to the very same runs."""
    m = _fragmented(small, 150_000)
    data = m.to_bytes()
    assert len(data) < 8 * len(m.runs)
    back = parse_manifest(m.name, data)
    assert back.runs == m.runs and back.page_count == m.page_count


def test_a_version_1_manifest_still_reads(small: Manifest) -> None:
    """A manifest written before the packing (format_version 1, runs as JSON lists) reads."""
    m = _fragmented(small, 500)
    doc = json.loads(m.to_bytes())
    number = {p: i for i, p in enumerate(doc["packs"])}
    del doc["runs_zstd"]
    doc["format_version"] = 1
    doc["runs"] = [[r.first_pgno, r.count, number[r.pack], r.first_slot] for r in m.runs]
    assert parse_manifest(m.name, json.dumps(doc).encode()).runs == m.runs


@pytest.mark.parametrize(
    "packing",
    [
        "not base64 !",
        base64.b64encode(b"\x28\xb5\x2f\xfd garbage").decode(),
        "",
        None,
        "truncated",
        "one run short",
    ],
)
def test_a_damaged_runs_packing_is_one_manifest_error(small: Manifest, packing: str | None) -> None:
    """Runs that are not base64, not zstd, not a string, cut short, or one run short of the
    page count: one ManifestFormatError naming the manifest, never another exception."""
    m = _fragmented(small, 500)
    doc = json.loads(m.to_bytes())
    if packing == "truncated":
        packing = doc["runs_zstd"][: len(doc["runs_zstd"]) // 2]
    elif packing == "one run short":
        packing = json.loads(dataclasses.replace(m, runs=m.runs[:-1]).to_bytes())["runs_zstd"]
    doc["runs_zstd"] = packing
    with pytest.raises(ManifestFormatError, match="b0"):
        parse_manifest(m.name, json.dumps(doc).encode())


def test_a_version_2_store_roundtrip(tmp_path: Path) -> None:
    """A backup written now is format_version 2 and carries no JSON run lists."""
    m = backup(make_db(tmp_path / "live.db", wal=True, rows=200), tmp_path / "store", "b0")
    doc = json.loads((tmp_path / "store" / "manifests" / "b0.json").read_bytes())
    assert doc["format_version"] == 2 and "runs" not in doc
    assert parse_manifest("b0", m.to_bytes()).runs == m.runs
