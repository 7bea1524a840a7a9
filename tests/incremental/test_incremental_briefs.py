"""The command line does not parse every manifest on each command (issue 16: a day of
`every: 1m` backups made `list` and `backup --policy P` take minutes): `list` reads the stores'
cached briefs, a backup reads only its chain head, `verify NAME` and `restore NAME` only NAME's
manifests; and the output is the same with the cache, without it, or with a spoilt one."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine

from backup_sidecar import jobs
from backup_sidecar.jobs import pagesummary
from backup_sidecar.jobs.pagestores import find_page_backup, pages_root
from backup_sidecar.pagestore import briefs, fsio, manifest
from support.cli import clean_env, is_log_record, run_cli
from support.clock import fake_clock_env, find_libfaketime, step_clock
from support.databases import make_db
from support.incremental import incremental_config, incremental_runtime

DBS = ("arrow", "user")


@pytest.fixture
def rt(tmp_path: Path, backup_dir: Path) -> jobs.Runtime:
    """Two databases, four backups of the incremental policy `hourly`, listed a minute later
    (so none of the manifests is too young to be cached) by a new process (nothing in memory)."""
    user = make_db(tmp_path / "user_data.db", wal=True, rows=800)
    arrow = make_db(tmp_path / "arrow_database.db", wal=False, rows=200)
    runtime = incremental_runtime(backup_dir, {"user": user, "arrow": arrow}, keep=100)
    for _ in range(4):
        jobs.run_backup(runtime, policy="hourly")
    return runtime


def forget() -> None:
    """What a process remembers of the stores (a new CLI process remembers nothing)."""
    briefs._memo.clear()
    pagesummary._cache.clear()


@pytest.fixture(autouse=True)
def new_process() -> Iterator[None]:
    forget()
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=1), tick=True):
        yield
    forget()


def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the manifests parsed from now on, by any caller (a spy on the parser)."""
    seen: list[str] = []
    real = manifest._parse

    def spy(name: str, data: bytes) -> manifest.Manifest:
        seen.append(name)
        return real(name, data)

    monkeypatch.setattr(manifest, "_parse", spy)
    return seen


def listing(rt: jobs.Runtime) -> list[dict[str, object]]:
    return [jobs.archive_json(a) for a in jobs.with_incremental(rt, [])]


def test_list_parses_no_manifest_once_the_stores_are_cached(
    rt: jobs.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first listing writes each store's cache; a listing by a new process then parses
    no manifest, and lists exactly what a listing without any cache lists."""
    first = listing(rt)
    assert len(first) == 4
    forget()
    seen = parses(monkeypatch)
    assert listing(rt) == first
    assert seen == []
    for db in DBS:
        (pages_root(rt.backup_dir) / db / briefs.CACHE).unlink()
    forget()
    assert listing(rt) == first
    assert len(seen) == 8  # without the cache: every manifest of both stores


def test_an_incremental_backup_reads_only_its_chain_head(
    rt: jobs.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`backup --policy P` of a new process, the stores cached: the only manifest it parses
    is its parent, the chain's head (for the chain record, then for the deltas)."""
    head = listing(rt)[0]["name"]
    forget()
    seen = parses(monkeypatch)
    info = jobs.run_backup(rt, policy="hourly")
    assert info.sequence == 5
    assert set(seen) == {head} and len(seen) <= 2 * len(DBS)


def test_verify_and_restore_read_only_the_named_backup(
    rt: jobs.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding backup NAME (verify, restore, export, the drill) parses NAME's manifest in
    each store, no other backup's; a name no store holds is None, parsing nothing."""
    oldest = listing(rt)[-1]["name"]
    seen = parses(monkeypatch)
    found = find_page_backup(rt.backup_dir, str(oldest))
    assert found is not None and found.databases == DBS and not found.errors
    assert seen == [oldest, oldest]
    assert find_page_backup(rt.backup_dir, "hourly_19700101_000000") is None
    assert seen == [oldest, oldest]


def test_list_output_is_the_same_with_without_and_with_a_spoilt_cache(
    tmp_path: Path, backup_dir: Path
) -> None:
    """Real CLI processes, a minute later by their clock: `list --json` writes each store's
    cache of every manifest, and lists the same with it, with it spoilt (one log line, never
    an error) and with it gone."""
    libfaketime = find_libfaketime()
    assert isinstance(libfaketime, Path), libfaketime
    user = make_db(tmp_path / "user_data.db", wal=True, rows=800)
    arrow = make_db(tmp_path / "arrow_database.db", wal=False, rows=200)
    cfg = incremental_config(tmp_path / "sidecar.yaml", backup_dir, {"user": user, "arrow": arrow})
    for args in (["--policy", "hourly"], ["--name", "full_one"], ["--policy", "hourly"]):
        assert run_cli("backup", *args, config=cfg).returncode == 0
    clock, env = fake_clock_env(tmp_path, libfaketime)
    step_clock(clock, "+1m")

    def listed() -> tuple[list[object], str]:
        args = ("--verbose", "list", "--json")  # `list` alone logs critical events only
        result = run_cli(*args, config=cfg, env=clean_env(**env))
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout), result.stderr

    first, _ = listed()
    assert [a["kind"] for a in first] == ["incremental", "archive", "incremental"]  # type: ignore[index]
    caches = [pages_root(backup_dir) / db / briefs.CACHE for db in DBS]
    for cache in caches:
        assert len(briefs._decode(cache.read_bytes())) == 2
    assert listed()[0] == first
    for cache in caches:
        cache.write_bytes(b"spoilt")
    again, stderr = listed()
    assert again == first
    records = [json.loads(ln) for ln in stderr.splitlines() if is_log_record(ln)]
    assert sum(r["event"] == "page_store_cache_problem" for r in records) == 2
    for cache in caches:
        assert len(briefs._decode(cache.read_bytes())) == 2  # written anew
        cache.unlink()
    assert listed()[0] == first


def test_a_planted_cache_never_makes_the_prune_delete_the_newest(
    tmp_path: Path, backup_dir: Path
) -> None:
    """keep 2 over four backups; the newest backup's brief rewritten in both stores' caches
    (sequence 0, the cache's checksum made to match: what anyone who can write the backup
    directory can do; outside attack, issue 16). The prune reads the expired backups' own
    manifests before deleting, finds the cache contradicted, deletes nothing, fails naming
    the backup and drops the caches; the next prune deletes the two oldest. Before, the
    forged newest was deleted and the prune exited 0."""
    user = make_db(tmp_path / "user_data.db", wal=True, rows=300)
    arrow = make_db(tmp_path / "arrow_database.db", wal=False, rows=100)
    runtime = incremental_runtime(backup_dir, {"user": user, "arrow": arrow}, keep=2)
    names = [jobs.run_backup(runtime, policy="hourly").name for _ in range(4)]
    for db in DBS:
        store = pages_root(backup_dir) / db
        [head] = [b for b in briefs.list_briefs(store) if isinstance(b, briefs.Brief)
                  and b.name == names[-1]]  # fmt: skip
        forged = dataclasses.replace(head, metadata={**head.metadata, "sequence": 0})
        with fsio.open_store(store, exclusive=True, timeout_s=5) as dirs:
            briefs.remember(dirs, [forged], on_problem=lambda p: None)
    forget()
    pruned = jobs.run_prune(runtime, policies=["hourly"])
    assert pruned.deleted == []
    assert [(i.name, "cache" in why) for i, why in pruned.failed] == [(names[-1], True)]
    for db in DBS:
        assert names[-1] in [b.name for b in briefs.list_briefs(pages_root(backup_dir) / db)
                             if isinstance(b, briefs.Brief)]  # fmt: skip
    forget()
    again = jobs.run_prune(runtime, policies=["hourly"])
    assert sorted(a.name for a in again.deleted) == sorted(names[:2])
    assert find_page_backup(backup_dir, names[-1]) is not None
