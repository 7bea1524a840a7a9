"""Damaged and hostile archives: verify refuses each, naming the fault; restore changes nothing.

One good archive of two small real databases is written once per module; every bad input is
derived from its bytes (flipped, truncated, padded) or re-packed around its real members with
Python's tarfile and gzip. Each bad input is checked through the library (fast, every case) and
through the real CLI (``verify`` and ``restore --force``, all cases run concurrently).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from backup_sidecar.archiver import (
    DatabaseSpec,
    Limits,
    list_archives,
    restore_archive,
    staging_area,
    verify_archive,
)
from backup_sidecar.errors import CorruptArchiveError
from support.archives import (
    ARCHIVE,
    BAD,
    CLI_CASES,
    GZIP_HEADER,
    GZIP_TRAILER,
    METADATA,
    NOW,
    Build,
    GoodArchive,
    flip,
    repack,
    seed_bomb,
)


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

    def restore(self, **options: Any) -> None:
        """``restore_archive`` of the scene's archive over its live databases."""
        restore_archive(
            self.archive,
            databases=self.specs(),
            selected=None,
            backup_dir=self.backup_dir,
            now=NOW,
            **options,
        )

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
        scene.restore()
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
    return seed_bomb(user_bytes=64 << 20, metadata_first=True)


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
        scene.restore(limits=limits)
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
LISTED: dict[str, tuple[Build, str, str]] = {
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
