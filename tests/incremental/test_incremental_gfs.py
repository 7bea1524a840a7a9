"""GFS retention of incremental policies (jobs/pageprune.py): the archives' rule selection
applied to incremental backups, checked against the reference model; real chains pruned by
calendar buckets with every kept backup rebuilding byte for byte; and kill -9 at every file
system step of such a prune."""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from backup_sidecar import jobs, pagestore
from backup_sidecar.archiver import ArchiveInfo, ArchiveStatus, KeepRules
from backup_sidecar.jobs.pagecheck import mark_verified
from backup_sidecar.jobs.pageprune import select_pages
from backup_sidecar.jobs.pagestores import find_page_backup, pages_root
from support.databases import make_db
from support.gfs_model import cases, reference_kept
from support.incremental import incremental_runtime, manifests, rebuild_to
from support.paths import ROOT

CRASH = ROOT / "tests" / "support" / "pagestore_crash.py"
STATUSES = [ArchiveStatus.UNVERIFIED] * 3 + [ArchiveStatus.VERIFIED, ArchiveStatus.DAMAGED]


def _backup(i: int, when: datetime, status: ArchiveStatus) -> ArchiveInfo:
    return ArchiveInfo(
        name=f"inc_{i:03d}",
        path=Path(f"/nonexistent/pages/user/manifests/inc_{i:03d}.json"),
        size_bytes=1,
        created_at=when,
        status=status,
        policy="inc",
        databases=("user",),
        sequence=i,
        kind="incremental",
    )


@settings(max_examples=800, deadline=None)
@given(
    cases(),
    st.lists(st.sampled_from(STATUSES), min_size=30, max_size=30),
    st.integers(0, 40),
)
def test_incremental_selection_is_the_archives_rules_plus_the_newest(
    case: tuple[list[datetime], KeepRules, tzinfo], statuses: list[ArchiveStatus], spare: int
) -> None:
    """Whatever the times, zone, rules, verified and damaged backups and the one just written:
    the backups kept are exactly the reference model's on the backups not damaged, plus the
    newest verified one, the newest one (the chain's head) and the one spared; each kept has
    a reason; a damaged backup is neither kept nor expired; the rest expire."""
    times, rules, tz = case
    backups = [_backup(i + 1, t, s) for i, (t, s) in enumerate(zip(times, statuses, strict=False))]
    spared = f"inc_{spare:03d}"
    chosen = select_pages(backups, rules={"inc": rules}, spare=[spared], tz=tz)
    kept = {b.name: why for b, why in chosen.kept}
    expired = [b.name for b in chosen.expired]
    live = [b for b in backups if b.status is not ArchiveStatus.DAMAGED]
    newest_first = live[::-1]
    model = reference_kept([b.created_at for b in newest_first], rules, tz)
    expected = {newest_first[i].name for i in model}
    expected |= {b.name for b in newest_first[:1]}
    verified = [b for b in newest_first if b.status is ArchiveStatus.VERIFIED]
    expected |= {b.name for b in verified[:1]}
    expected |= {spared} & {b.name for b in live}
    assert set(kept) == expected
    assert all(kept.values())
    assert len(expired) == len(set(expired))
    assert set(expired) == {b.name for b in live} - expected


# --- real chains -------------------------------------------------------------------------------

#: Written in this order (creation sequence 1..6) into one chain (no rebase): A is its base.
DATED = {
    "A": datetime(2020, 1, 10, 12, 0, tzinfo=UTC),
    "B": datetime(2020, 1, 20, 12, 0, tzinfo=UTC),
    "C": datetime(2020, 2, 5, 9, 0, tzinfo=UTC),
    "D": datetime(2020, 2, 5, 18, 0, tzinfo=UTC),
    "E": datetime(2020, 2, 6, 8, 0, tzinfo=UTC),
    "F": datetime(2020, 2, 6, 20, 0, tzinfo=UTC),
}
#: Backups that only rewrite the hot row, which the next one rewrites again: their packs die.
HOT_ONLY = {"C", "E"}
RULES = KeepRules(last=1, daily=2, monthly=2)
#: What RULES keep of DATED, and why (the rest, the base A and the middles C and E, expire).
KEPT = {
    "F": ("last 1", "daily 2020-02-06", "monthly 2020-02"),
    "D": ("daily 2020-02-05",),
    "B": ("monthly 2020-01",),
}


def _change(db: Path, i: int, *, hot_only: bool = False) -> None:
    """A hot row updated in place (same length), and unless ``hot_only`` a few scattered rows
    and new ones: each backup of the chain stores deltas of pages earlier backups stored."""
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE items SET body = ? WHERE id = 1", (f"hot {i:02d}" * 40,))
        if not hot_only:
            conn.execute("UPDATE items SET body = body || ? WHERE id % 97 = ?", (f"-{i}", i % 97))
            rows = [(f"new {i} {j}" * 10,) for j in range(150)]
            conn.executemany("INSERT INTO items(body) VALUES (?)", rows)
    conn.close()


def _at(rt: jobs.Runtime, when: datetime) -> jobs.Runtime:
    """``rt`` with its clock stopped at ``when``."""
    return dataclasses.replace(rt, clock=lambda: when)


def _chain(tmp_path: Path, backup_dir: Path) -> tuple[jobs.Runtime, dict[str, bytes], Path]:
    """DATED written as incremental backups of a rollback-journal database (so the file is
    the image): the runtime (RULES), each backup's image, and the database."""
    db = make_db(tmp_path / "user_data.db", wal=False, rows=1500)
    rt = incremental_runtime(backup_dir, {"user": db}, policy="inc")
    rt = dataclasses.replace(rt, retention={"inc": RULES})
    images: dict[str, bytes] = {}
    for i, (key, when) in enumerate(DATED.items()):
        _change(db, i, hot_only=key in HOT_ONLY)
        jobs.run_backup(_at(rt, when), policy="inc", archive_name=key)
        images[key] = db.read_bytes()
    return rt, images, db


def _rebuild_all(backup_dir: Path, images: dict[str, bytes], out: Path) -> Iterator[str]:
    """Rebuild every backup in ``images`` whose manifest is still there; yield its name after
    checking the rebuilt bytes are exactly its image."""
    out.mkdir(parents=True, exist_ok=True)
    for name in manifests(backup_dir, "user"):
        target = out / f"{name}.db"
        target.unlink(missing_ok=True)
        rebuild_to(backup_dir, "user", name, target)
        assert target.read_bytes() == images[name], name
        target.unlink()
        yield name


def test_gfs_prunes_a_real_chain_by_buckets_and_every_kept_backup_rebuilds(
    tmp_path: Path, backup_dir: Path
) -> None:
    """Six backups of one chain over two months with `keep_last 1, keep_daily 2,
    keep_monthly 2`: the dry run names the rule keeping each (F, D, B) and deletes nothing;
    the prune deletes the chain's base A and the middles C and E and collects their dead
    packs; B, D and F each rebuild to their exact image, a new backup on F's chain too, and
    the verified marker of a pruned backup (A; D is the newest verified) goes with it.
    (Before, such rules were refused at load for an incremental policy.)"""
    rt, images, db = _chain(tmp_path, backup_dir)
    for name in ("A", "D"):  # D, the newest verified, is kept anyway: A's marker must go
        found = find_page_backup(backup_dir, name)
        assert found is not None
        mark_verified(backup_dir, found)
    store = pages_root(backup_dir) / "user"
    packs_before = {p.name for p in (store / "packs").glob("*.pack")}

    dry = jobs.run_prune(rt, policies=["inc"], dry_run=True)
    assert sorted(a.name for a in dry.deleted) == ["A", "C", "E"]
    assert {a.name: why for a, why in dry.kept} == KEPT
    assert manifests(backup_dir, "user") == sorted(DATED)

    done = jobs.run_prune(rt, policies=["inc"])
    assert sorted(a.name for a in done.deleted) == ["A", "C", "E"] and not done.failed
    assert manifests(backup_dir, "user") == ["B", "D", "F"]
    assert not (pages_root(backup_dir) / ".verified" / "user" / "A").exists()
    assert {p.name for p in (store / "packs").glob("*.pack")} < packs_before
    assert pagestore.collect_garbage(store).packs_deleted == ()
    assert sorted(_rebuild_all(backup_dir, images, tmp_path / "out")) == ["B", "D", "F"]

    _change(db, 99)
    now = datetime(2020, 2, 7, 9, 0, tzinfo=UTC)
    jobs.run_backup(_at(rt, now), policy="inc", archive_name="G")
    images["G"] = db.read_bytes()
    assert list(_rebuild_all(backup_dir, images, tmp_path / "out")) == ["B", "D", "F", "G"]


def test_the_newest_backup_stays_whatever_the_rules(tmp_path: Path, backup_dir: Path) -> None:
    """With only `keep_within 1h` nothing but the newest backup F is within the hour before
    F's time, so F alone stays (`within 1h`); with `prune --keep 0` (a plain count of 0, and
    no verified backup to spare) F still stays as the chain's head (`newest`), never expired,
    and every other backup would go."""
    rt, _, _ = _chain(tmp_path, backup_dir)
    rt = dataclasses.replace(rt, retention={"inc": KeepRules(within=timedelta(hours=1))})
    dry = jobs.run_prune(rt, policies=["inc"], dry_run=True)
    assert {a.name: why for a, why in dry.kept} == {"F": ("within 1h",)}
    zero = jobs.run_prune(rt, policies=["inc"], keep=0, dry_run=True)
    assert {a.name: why for a, why in zero.kept} == {"F": ("newest",)}
    assert sorted(a.name for a in zero.deleted) == ["A", "B", "C", "D", "E"]


def test_a_gc_a_prune_owes_is_collected_by_the_next_prune_that_deletes_nothing(
    tmp_path: Path, backup_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prune deletes A, C and E's manifests, then its GC fails (an I/O error injected at the
    page store boundary): C and E's dead packs stay and the failure is logged. The next prune
    expires nothing, yet it collects them (before, only a prune that deleted a manifest ran a
    GC, so a failed or killed one left dead packs until some later backup expired), and the
    one after that runs no GC at all (nothing owed)."""
    rt, images, _ = _chain(tmp_path, backup_dir)
    store = pages_root(backup_dir) / "user"
    real = pagestore.collect_garbage
    calls: list[Path] = []

    def failing(where: Path, **kw: Any) -> pagestore.GcReport:
        calls.append(where)
        if len(calls) == 1:
            raise OSError(5, "Input/output error (injected)")
        return real(where, **kw)

    monkeypatch.setattr(pagestore, "collect_garbage", failing)
    first = jobs.run_prune(rt, policies=["inc"])
    assert sorted(a.name for a in first.deleted) == ["A", "C", "E"] and len(calls) == 1
    dead = {p.name for p in (store / "packs").glob("*.pack")}
    second = jobs.run_prune(rt, policies=["inc"])
    assert not second.deleted and len(calls) == 2
    live = {p.name for p in (store / "packs").glob("*.pack")}
    assert live < dead
    assert real(store).packs_deleted == ()
    assert sorted(_rebuild_all(backup_dir, images, tmp_path / "out")) == ["B", "D", "F"]
    jobs.run_prune(rt, policies=["inc"])
    assert len(calls) == 2


def _run_crash(kill_at: int, backup_dir: Path) -> subprocess.CompletedProcess[str]:
    rules = json.dumps({"last": RULES.last, "daily": RULES.daily, "monthly": RULES.monthly})
    return subprocess.run(
        [sys.executable, str(CRASH), str(kill_at), str(backup_dir), "prune", "inc", rules],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_kill_at_every_step_of_a_gfs_prune_keeps_every_kept_backup(
    tmp_path: Path, backup_dir: Path
) -> None:
    """A GFS prune (the jobs layer: manifests of A, C and E deleted, their markers, then the
    store's GC) run in a real subprocess SIGKILLed at its Nth file system step, N = 1, 2, ...
    until it completes, each time from the same chain: after every kill each backup the rules
    keep (B, D, F) and every other manifest still present rebuilds to its exact image; a
    prune run again then finishes the job (A, C, E gone, nothing left to collect)."""
    _, images, _ = _chain(tmp_path, backup_dir)
    template = tmp_path / "template"
    shutil.copytree(backup_dir, template, symlinks=True)
    out = tmp_path / "out"
    kills = 0
    for n in range(1, 200):
        shutil.rmtree(backup_dir)
        shutil.copytree(template, backup_dir, symlinks=True)
        done = _run_crash(n, backup_dir)
        assert done.returncode in (0, -signal.SIGKILL), done.stderr
        left = set(_rebuild_all(backup_dir, images, out))
        assert set(KEPT) <= left, (n, sorted(left))
        if done.returncode == 0:
            break
        kills += 1
        again = _run_crash(0, backup_dir)
        assert again.returncode == 0, again.stderr
        assert manifests(backup_dir, "user") == sorted(KEPT)
        assert set(_rebuild_all(backup_dir, images, out)) == set(KEPT)
        store = pages_root(backup_dir) / "user"
        assert pagestore.collect_garbage(store).packs_deleted == ()
    else:
        raise AssertionError("the prune never completed")
    assert kills >= 6, kills
    assert manifests(backup_dir, "user") == sorted(KEPT)


def test_the_prune_repacks_mostly_dead_packs_and_kept_backups_still_rebuild(
    tmp_path: Path, backup_dir: Path
) -> None:
    """Eight backups of a policy with keep 2, each rewriting a hot table and changing a few
    scattered rows: the pruned backups' packs keep a few live pages among many dead ones
    (before, a pack stayed whole while one of its pages was needed). The prune's GC repacks
    the mostly-dead ones (`page_repack_completed` with the bytes reclaimed, the kept
    manifests rewritten), and the two kept backups rebuild to their exact images."""
    db = make_db(tmp_path / "user_data.db", wal=False, rows=3000)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("CREATE TABLE hot (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        conn.executemany("INSERT INTO hot(v) VALUES (?)", [("x" * 300,)] * 400)
    conn.close()
    rt = incremental_runtime(backup_dir, {"user": db}, policy="inc", keep=2)
    images: dict[str, bytes] = {}
    for i in range(8):
        conn = sqlite3.connect(db)
        with conn:
            conn.execute("UPDATE hot SET v = ? || substr(v, 4)", (f"{i:03d}",))
            conn.execute("UPDATE items SET body = body || 'x' WHERE id % 400 = ?", (i * 37,))
        conn.close()
        name = f"h{i}"
        jobs.run_backup(rt, policy="inc", archive_name=name)
        images[name] = db.read_bytes()
    with structlog.testing.capture_logs() as logs:
        jobs.run_prune(rt, policies=["inc"])
    assert manifests(backup_dir, "user") == ["h6", "h7"]
    repacked = [e for e in logs if e["event"] == "page_repack_completed"]
    assert len(repacked) == 1 and repacked[0]["bytes_reclaimed"] > 0, logs
    assert repacked[0]["manifests_rewritten"] >= 1
    assert list(_rebuild_all(backup_dir, images, tmp_path / "out")) == ["h6", "h7"]
