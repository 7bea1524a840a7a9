"""Links and foreign files planted in the backup directory (issue 13, items 1 and 2).

The backup directory is shared ground: whoever can write to it can put a symbolic link (or a
hard link) where the sidecar keeps its own entries: ``.locks`` and its lock files, ``.staging``,
an archive. Each case plants one, pointing at a live database, a sentinel file or a directory
outside holding old subdirectories and ``*.name`` files (the leftovers cleanup deletes), then
runs the real daemon's start, the real CLI's backup, restore and prune, and the daemon's
socket. Every one must refuse with one line naming the planted entry, and leave everything
outside the backup directory, the live database first, byte-identical.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backup_sidecar.archiver import (
    DatabaseSpec,
    resolve_archive,
    restore_archive,
    staging_area,
    verify_archive,
)
from backup_sidecar.control import ControlError
from backup_sidecar.errors import ArchiveLinkError
from support.archives import library_archive
from support.cli import cli_env, one_error_line, run_cli
from support.daemon import DaemonRunner, quiet_config
from support.databases import digest, make_content_db
from support.files import tree, tree_diff
from support.waiting import DEADLINE_S

#: A day ago: older than the 60 s the cleanup spares a lockless staging directory.
OLD_S = 86_400


@dataclass(frozen=True)
class Scene:
    """A backup directory holding one good archive of the live database, and the ground
    outside it that a planted link points into."""

    root: Path
    backup_dir: Path
    live: Path
    outside: Path
    sentinel: Path
    victim_dir: Path

    def outside_state(self) -> dict[str, str]:
        """Everything a followed link could damage: the live database's directory and the
        directory outside (content digests, kinds, existence)."""
        return {
            **{f"live/{k}": v for k, v in tree(self.live.parent).items()},
            **{f"outside/{k}": v for k, v in tree(self.outside).items()},
        }


@pytest.fixture
def scene(tmp_path: Path) -> Scene:
    live = make_content_db(tmp_path / "live" / "user.db", rows=200, tag="live", wal=True)
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    source = make_content_db(tmp_path / "src" / "user.db", rows=50, tag="archived", wal=False)
    library_archive(backup_dir, "manual_good", user=source)
    outside = tmp_path / "outside"
    victim_dir = outside / "victim"
    (victim_dir / "backup-old" / "deep").mkdir(parents=True)
    (victim_dir / "backup-old" / "deep" / "data").write_bytes(b"precious data\n")
    (victim_dir / "report.name").write_bytes(b"precious name file\n")
    (victim_dir / "daemon.lock").write_bytes(b"not a lock\n")
    for path in (
        victim_dir / "backup-old" / "deep" / "data",
        victim_dir / "backup-old" / "deep",
        victim_dir / "backup-old",
        victim_dir / "report.name",
    ):
        old = path.stat().st_mtime - OLD_S
        os.utime(path, (old, old))
    sentinel = outside / "sentinel.txt"
    sentinel.write_bytes(b"sentinel: must never change\n")
    return Scene(tmp_path, backup_dir, live, outside, sentinel, victim_dir)


def _replace(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink(missing_ok=True)


def _plant_link(entry: str, target: Callable[[Scene], Path]) -> Callable[[Scene], Path]:
    def plant(s: Scene) -> Path:
        path = s.backup_dir / entry
        path.parent.mkdir(exist_ok=True)
        _replace(path)
        path.symlink_to(target(s))
        return path

    return plant


def _plant_hard_link(s: Scene) -> Path:
    path = s.backup_dir / ".locks" / "daemon.lock"
    path.parent.mkdir(exist_ok=True)
    os.link(s.live, path)
    return path


#: Each planted entry, by what it is and where it points; the entry the error must name.
PLANTS: dict[str, Callable[[Scene], Path]] = {
    "daemon_lock_to_live_db": _plant_link(".locks/daemon.lock", lambda s: s.live),
    "db_lock_to_sentinel": _plant_link(".locks/db-user.lock", lambda s: s.sentinel),
    "locks_to_dir": _plant_link(".locks", lambda s: s.victim_dir),
    "locks_to_file": _plant_link(".locks", lambda s: s.sentinel),
    "staging_to_dir": _plant_link(".staging", lambda s: s.victim_dir),
    "staging_to_file": _plant_link(".staging", lambda s: s.sentinel),
    "daemon_lock_hard_link_to_live_db": _plant_hard_link,
}


def _env(s: Scene) -> dict[str, str]:
    return cli_env(s.backup_dir, arrow=s.root / "live" / "arrow.db", user=s.live)


def _assert_refused_naming(line: str, entry: Path) -> None:
    assert str(entry) in line, line
    assert "refusing" in line, line


#: The CLI operations that touch the backup directory, with their arguments.
CLI_OPERATIONS = {
    "backup": ("backup", "--db", "user"),
    "restore": ("restore", "--force", "--db", "user", "manual_good"),
    "prune": ("prune", "--policy", "manual", "--keep", "0"),
    "verify": ("verify", "manual_good"),
}


@pytest.mark.parametrize("operation", sorted(CLI_OPERATIONS))
@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_cli_refuses_a_planted_entry_and_touches_nothing_outside(
    scene: Scene, plant: str, operation: str
) -> None:
    """CLI backup, restore, prune and verify with a link (to the live database, a file, or a
    directory of old leftovers) or a hard link planted among the backup directory's own
    entries exit 1 with one line naming the entry: the live database, the sentinel and the
    directory outside keep every byte and every file, and the backup directory gains no
    archive and loses none."""
    entry = PLANTS[plant](scene)
    before = scene.outside_state()
    archives = sorted(p.name for p in scene.backup_dir.glob("*.tar.gz"))
    live_digest = digest(scene.live)

    result = run_cli(*CLI_OPERATIONS[operation], env=_env(scene), cwd=scene.root)

    assert result.returncode == 1, (result.stdout, result.stderr)
    _assert_refused_naming(one_error_line(result), entry)
    assert tree_diff(before, scene.outside_state()) == {}
    assert sorted(p.name for p in scene.backup_dir.glob("*.tar.gz")) == archives
    assert digest(scene.live) == live_digest


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_daemon_start_refuses_a_planted_entry(
    scene: Scene, plant: str, daemons: DaemonRunner, sock_dir: Path
) -> None:
    """A daemon started on a backup directory with a planted link or hard link among its own
    entries exits 1 before starting, with one line naming the entry; the lock never truncated
    the live database and the leftovers cleanup deleted nothing outside."""
    entry = PLANTS[plant](scene)
    before = scene.outside_state()
    cfg = quiet_config(
        backup_dir=scene.backup_dir,
        databases={"user": scene.live},
        socket_path=sock_dir / "c.sock",
    )
    d = daemons.start(cfg, started_ok=False)
    assert d.proc.wait(timeout=DEADLINE_S) == 1
    d.log.join()
    errors = [line for line in d.log.raw if line.strip() and not line.startswith("{")]
    assert len(errors) == 1, d.log.raw
    _assert_refused_naming(errors[0], entry)
    assert not d.log.find("daemon_started")
    assert tree_diff(before, scene.outside_state()) == {}


@pytest.mark.parametrize("plant", ["staging_to_dir", "locks_to_dir", "db_lock_to_sentinel"])
def test_running_daemon_refuses_an_entry_planted_under_it(
    scene: Scene, plant: str, daemons: DaemonRunner, sock_dir: Path
) -> None:
    """An entry planted while the daemon runs makes each socket backup, restore, prune and
    verify fail with the daemon's error naming the entry (never a backup staged outside, never
    a cleanup outside), and the daemon keeps serving."""
    cfg = quiet_config(
        backup_dir=scene.backup_dir,
        databases={"user": scene.live},
        socket_path=sock_dir / "c.sock",
    )
    d = daemons.start(cfg)
    entry = PLANTS[plant](scene)
    before = scene.outside_state()
    for op, fields in (
        ("backup", {}),
        ("restore", {"archive": "manual_good", "confirm": True}),
        ("prune", {"keep": 0}),
        ("verify", {"archive": "manual_good"}),
    ):
        with pytest.raises(ControlError) as refused:
            d.request(op, **fields)
        _assert_refused_naming(refused.value.message, entry)
    assert tree_diff(before, scene.outside_state()) == {}
    assert d.ping()["pong"] is True


@pytest.mark.parametrize("target", ["live_db", "sentinel", "outside_archive"])
@pytest.mark.parametrize("operation", ["verify", "restore"])
def test_an_archive_that_is_a_symlink_is_refused(scene: Scene, target: str, operation: str) -> None:
    """An archive name in the backup directory that is a symbolic link (to the live database,
    to a file like /etc/shadow, or to a valid archive kept outside) is never read: verify and
    restore exit 1 naming the link, nothing outside changes, `list` does not show it and
    prune leaves it and its target alone."""
    outside_archive = library_archive(scene.outside, "elsewhere", user=scene.live)
    targets = {
        "live_db": scene.live,
        "sentinel": scene.sentinel,
        "outside_archive": outside_archive,
    }
    link = scene.backup_dir / "manual_linked.tar.gz"
    link.symlink_to(targets[target])
    before = scene.outside_state()
    args = ("restore", "--force") if operation == "restore" else ("verify",)

    result = run_cli(*args, "manual_linked", env=_env(scene), cwd=scene.root)

    assert result.returncode == 1, (result.stdout, result.stderr)
    line = one_error_line(result)
    assert str(link) in line, line
    assert "symbolic link" in line, line
    assert tree_diff(before, scene.outside_state()) == {}
    listed = run_cli("list", "--json", env=_env(scene), cwd=scene.root)
    assert "manual_linked" not in listed.stdout
    pruned = run_cli("prune", "--keep", "0", env=_env(scene), cwd=scene.root)
    assert pruned.returncode == 0, pruned.stderr
    assert link.is_symlink()
    assert tree_diff(before, scene.outside_state()) == {}


def test_a_foreign_owned_locks_directory_is_refused(scene: Scene) -> None:
    """A `.locks` owned by another uid (another container sharing the volume) is refused with
    one line naming it and saying whose it is, and nothing is created in it."""
    locks = scene.backup_dir / ".locks"
    shutil.rmtree(locks, ignore_errors=True)  # the scene's own backups made ours
    locks.mkdir(mode=0o777)
    try:
        os.chown(locks, 65534, 65534)
    except PermissionError:
        pytest.skip("changing a file's owner needs root")
    result = run_cli(*CLI_OPERATIONS["backup"], env=_env(scene), cwd=scene.root)
    assert result.returncode == 1, result.stderr
    line = one_error_line(result)
    _assert_refused_naming(line, locks)
    assert "uid 65534" in line
    assert list(locks.iterdir()) == []


def test_a_symlinked_backup_dir_is_the_operators_choice(
    scene: Scene, daemons: DaemonRunner, sock_dir: Path
) -> None:
    """The backup directory itself may be a symbolic link (to a mount): the daemon starts on
    it and CLI backups, restores and prunes work through it; only links inside are refused."""
    mount = scene.root / "mount"
    scene.backup_dir.rename(mount)
    scene.backup_dir.symlink_to(mount)
    env = _env(scene)
    made = run_cli("backup", "--db", "user", "--name", "manual_new", env=env, cwd=scene.root)
    assert made.returncode == 0, made.stderr
    assert (mount / "manual_new.tar.gz").is_file()
    restored = run_cli("restore", "--force", "manual_good", env=env, cwd=scene.root)
    assert restored.returncode == 0, restored.stderr
    assert digest(scene.live)[2] == "archived"
    cfg = quiet_config(
        backup_dir=scene.backup_dir,
        databases={"user": scene.live},
        socket_path=sock_dir / "c.sock",
    )
    d = daemons.start(cfg)
    assert d.request("backup")["archive"]
    assert (mount / ".locks" / "daemon.lock").is_file()


def test_an_archive_swapped_for_a_link_after_it_was_resolved_is_not_read(scene: Scene) -> None:
    """An archive replaced by a symbolic link (to a valid archive kept outside) between its
    lookup and its reading is refused by verify and restore themselves, naming it; the live
    database keeps its content."""
    path = resolve_archive(scene.backup_dir, "manual_good")
    elsewhere = library_archive(scene.outside, "elsewhere", user=scene.live)
    path.unlink()
    path.symlink_to(elsewhere)
    live_digest = digest(scene.live)
    with (
        staging_area(scene.backup_dir, purpose="verify") as area,
        pytest.raises(ArchiveLinkError, match="symbolic link") as refused,
    ):
        verify_archive(path, staging=area)
    assert refused.value.path == path
    with pytest.raises(ArchiveLinkError, match="symbolic link"):
        restore_archive(
            path,
            databases={"user": DatabaseSpec("user", scene.live)},
            selected=None,
            backup_dir=scene.backup_dir,
            now=datetime(2026, 1, 2, tzinfo=UTC),
        )
    assert digest(scene.live) == live_digest
