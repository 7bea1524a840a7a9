"""An incremental backup cut short by kill -9 between two databases (one database's manifest
written, the next one's never) is an incomplete restore point: listed damaged, never counted
toward a policy's keep (CLI prune, the daemon's prune after a backup) nor toward the offsite
keep's window, never deleted by retention (kept for the operator, as a damaged archive), and it
never pushes out a complete backup (outside attack on issue 16, item 4)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from backup_sidecar import jobs
from backup_sidecar.jobs.pagestores import list_page_briefs
from backup_sidecar.jobs.prune import prune_after_backup
from backup_sidecar.service.live import Configured
from backup_sidecar.settings import load_settings, resolve_paths
from support.cli import run_cli
from support.databases import Writer, make_db
from support.incremental import incremental_config, manifests, rebuild_to
from support.offsite_pages import confirmed_manifests, incremental_site, offsite_place
from support.paths import ROOT

KILL = ROOT / "tests" / "support" / "incremental_kill.py"


def _dbs(tmp_path: Path) -> dict[str, Path]:
    return {
        "arrow": make_db(tmp_path / "data" / "arrow.db", wal=False, rows=200),
        "user": make_db(tmp_path / "data" / "user.db", wal=True, rows=300),
    }


def _killed(config: Path, backup_dir: Path, policy: str = "hourly") -> str:
    """One backup of ``policy`` killed (SIGKILL) between arrow's manifest and user's: its name."""
    before = set(manifests(backup_dir, "arrow"))
    proc = subprocess.run(
        [sys.executable, str(KILL), str(config), policy, "user"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -9, proc.stderr
    (name,) = set(manifests(backup_dir, "arrow")) - before
    assert name not in manifests(backup_dir, "user")
    return name


def _runtime(config: Path) -> jobs.Runtime:
    settings = load_settings(config, environ={})
    return Configured.of(settings, resolve_paths(settings, environ={}, cwd=config.parent)).runtime


def test_killed_backups_never_count_toward_keep_nor_push_out_a_complete_one(
    tmp_path: Path,
) -> None:
    """keep 5 over complete c1..c4 and three backups killed between arrow and user, two of
    them the newest (a writer committing to user throughout): the CLI prune deletes nothing
    (the 4 complete ones are within the keep) and keeps the killed ones, listed damaged with
    why; two more complete backups and the daemon's prune after the last: the 5 newest
    complete stay, only c1 goes, the killed ones still stay; every complete one kept rebuilds
    both databases."""
    dbs = _dbs(tmp_path)
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    config = incremental_config(tmp_path / "sidecar.yaml", backup_dir, dbs, keep="5")
    rt = _runtime(config)
    writer = Writer.start(dbs["user"], rate=100)
    try:
        complete = [jobs.run_backup(rt, policy="hourly").name for _ in range(3)]
        killed = [_killed(config, backup_dir)]
        complete.append(jobs.run_backup(rt, policy="hourly").name)
        killed += [_killed(config, backup_dir), _killed(config, backup_dir)]

        pruned = run_cli("prune", "--policy", "hourly", config=config)
        assert pruned.returncode == 0, pruned.stderr
        for db in dbs:
            assert set(complete) <= set(manifests(backup_dir, db))
        assert set(killed) <= set(manifests(backup_dir, "arrow"))
        listed, _ = list_page_briefs(backup_dir)
        why = {b.name: b.errors for b in listed}
        for name in killed:
            assert "never completed" in why[name]["user"]

        complete += [jobs.run_backup(rt, policy="hourly").name for _ in range(2)]
        prune_after_backup(rt, policy="hourly", just_written=complete[-1], outcomes=None)
    finally:
        writer.stop()
    for db in dbs:
        assert set(manifests(backup_dir, db)) & set(complete) == set(complete[1:])
    assert set(killed) <= set(manifests(backup_dir, "arrow"))
    for name in complete[1:]:
        (tmp_path / "out" / name).mkdir(parents=True)
        for db in dbs:
            rebuild_to(backup_dir, db, name, tmp_path / "out" / name / f"{db}.db")


def test_killed_backups_never_take_a_complete_ones_place_in_the_offsite_window(
    tmp_path: Path,
) -> None:
    """offsite keep 3 over complete c1..c3 and two newer backups killed between arrow and
    user: a pass uploads all three complete backups (the killed ones are not in the window
    and never go), so the 3 newest complete restore points are offsite."""
    section, environ, store = offsite_place("file", tmp_path)
    dbs = _dbs(tmp_path)
    site = incremental_site(tmp_path, dbs, offsite=section, environ=environ, offsite_keep=3)
    backup_dir = site.rt.backup_dir
    complete = [jobs.run_backup(site.rt, policy="hourly").name for _ in range(3)]
    killed = [_killed(site.config, backup_dir) for _ in range(2)]
    assert site.uploader.sync() == 3
    offsite = confirmed_manifests(store)
    assert offsite == {f"{db}/{n}" for db in dbs for n in complete}
    assert not {n for n in killed if f"arrow/{n}" in offsite}


def test_a_prune_killed_between_two_databases_is_finished_by_the_next(tmp_path: Path) -> None:
    """keep 2 over four complete backups; a prune killed (SIGKILL) after an expired backup's
    arrow manifest went and before user's (outside attack, issue 16): the next prune finishes that
    deletion and its own, leaving exactly the two newest, nothing listed damaged, both
    rebuilding both databases. Before, the half-deleted backup stayed for good, listed
    damaged (an alarm and an operator's chore for a backup retention had already expired)."""
    dbs = _dbs(tmp_path)
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    config = incremental_config(tmp_path / "sidecar.yaml", backup_dir, dbs, keep="2")
    rt = _runtime(config)
    names = [jobs.run_backup(rt, policy="hourly").name for _ in range(4)]
    proc = subprocess.run(
        [sys.executable, str(KILL), str(config), "hourly", "user", "prune"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == -9, proc.stderr
    half = set(manifests(backup_dir, "user")) - set(manifests(backup_dir, "arrow"))
    assert len(half) == 1 and half <= set(names[:2])  # one expired backup, arrow's gone
    pruned = run_cli("prune", "--policy", "hourly", config=config)
    assert pruned.returncode == 0, pruned.stderr
    for db in dbs:
        assert sorted(manifests(backup_dir, db)) == sorted(names[2:])
    backups, problems = list_page_briefs(backup_dir)
    assert problems == [] and all(not b.errors for b in backups)
    (tmp_path / "rebuilt").mkdir()
    for name in names[2:]:
        for db in dbs:
            rebuild_to(backup_dir, db, name, tmp_path / "rebuilt" / f"{db}-{name}.db")
