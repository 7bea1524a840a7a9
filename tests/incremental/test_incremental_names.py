"""An archive and an incremental backup never share a name (outside attack on issue 16, item
7): ``backup --name X`` of either kind is refused in one line when the other kind holds X, and
default names (the CLI's, the socket's) take the next free suffix across both kinds, so
``list``, ``verify NAME`` and ``restore NAME`` reach each backup."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

import yaml

from backup_sidecar import jobs
from backup_sidecar.service.live import Configured
from backup_sidecar.settings import load_settings, resolve_paths
from support.cli import one_error_line, run_cli
from support.daemon import DaemonRunner, daemon_config
from support.databases import make_db
from support.incremental import manifests
from support.waiting import wait_until

POLICIES = {
    "inc": {"every": "1h", "keep": 5, "mode": "incremental"},
    "daily": {"every": "1d", "keep": 5},
    "pre_restore": {"keep": 10},
}


def _config(tmp_path: Path) -> tuple[Path, Path]:
    """(config, backup dir): databases arrow (rollback journal) and user (WAL), policies inc
    (incremental) and daily (archives)."""
    dbs = {
        "arrow": make_db(tmp_path / "data" / "arrow.db", wal=False, rows=100),
        "user": make_db(tmp_path / "data" / "user.db", wal=True, rows=200),
    }
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    config = tmp_path / "sidecar.yaml"
    doc = {
        "backup_dir": str(backup_dir),
        "databases": {n: {"path": str(p)} for n, p in dbs.items()},
        "policies": POLICIES,
    }
    config.write_text(yaml.safe_dump(doc))
    return config, backup_dir


def _kinds(config: Path) -> list[tuple[str, str]]:
    listed = run_cli("list", "--json", config=config)
    assert listed.returncode == 0, listed.stderr
    return sorted((a["name"], a.get("kind", "archive")) for a in json.loads(listed.stdout))


def test_backup_name_of_either_kind_is_refused_when_the_other_kind_holds_it(
    tmp_path: Path,
) -> None:
    """CLI: an archive named as an existing incremental backup is refused in one line naming
    it (no archive written), and an incremental backup named as an existing archive is
    refused too (no manifest in any store); each name still reaches its own backup."""
    config, backup_dir = _config(tmp_path)
    made = run_cli("backup", "--policy", "inc", "--name", "shared_a", config=config)
    assert made.returncode == 0, made.stderr
    clash = run_cli("backup", "--policy", "daily", "--name", "shared_a", config=config)
    assert clash.returncode != 0
    assert "'shared_a'" in one_error_line(clash)
    assert "incremental backup" in one_error_line(clash)
    assert not (backup_dir / "shared_a.tar.gz").exists()

    made = run_cli("backup", "--policy", "daily", "--name", "shared_b", config=config)
    assert made.returncode == 0, made.stderr
    clash = run_cli("backup", "--policy", "inc", "--name", "shared_b", config=config)
    assert clash.returncode != 0
    assert "shared_b" in one_error_line(clash)
    for db in ("arrow", "user"):
        assert "shared_b" not in manifests(backup_dir, db)
    assert _kinds(config) == [("shared_a", "incremental"), ("shared_b", "archive")]
    for name in ("shared_a", "shared_b"):
        verified = run_cli("verify", name, config=config)
        assert verified.returncode == 0, verified.stderr


def test_default_names_take_the_next_free_suffix_across_both_kinds(tmp_path: Path) -> None:
    """A default-named backup at a second whose name the other kind holds takes ``-2``, in
    both directions: an incremental backup after an archive named ``inc_<second>``, an
    archive after an incremental backup named ``daily_<second>``."""
    config, backup_dir = _config(tmp_path)
    settings = load_settings(config, environ={})
    paths = resolve_paths(settings, environ={}, cwd=tmp_path)
    when = datetime(2026, 12, 7, 22, 0, 0, tzinfo=UTC)
    rt = dataclasses.replace(Configured.of(settings, paths).runtime, clock=lambda: when)
    archive = jobs.run_backup(rt, policy="daily", archive_name="inc_20261207_220000")
    incremental = jobs.run_backup(rt, policy="inc")
    assert (archive.kind, incremental.kind) == ("archive", "incremental")
    assert incremental.name == "inc_20261207_220000-2"
    incremental = jobs.run_backup(rt, policy="inc", archive_name="daily_20261207_220000")
    archive = jobs.run_backup(rt, policy="daily")
    assert archive.name == "daily_20261207_220000-2"
    assert (backup_dir / "daily_20261207_220000-2.tar.gz").is_file()
    assert len({n for n, _ in _kinds(config)}) == 4


def test_a_socket_backup_never_takes_a_name_an_archive_holds(
    tmp_path: Path, daemons: DaemonRunner, sock_dir: Path
) -> None:
    """Archives named ``inc_<second>`` for the coming seconds (an operator's `backup --name`):
    the incremental backup asked for on the socket within them is ``inc_<second>-2``, and
    verify of each name on the socket reaches its own kind."""
    config, backup_dir = _config(tmp_path)
    cfg = daemon_config(
        backup_dir=backup_dir,
        databases={n: tmp_path / "data" / f"{n}.db" for n in ("arrow", "user")},
        socket_path=sock_dir / "control.sock",
        policies={"inc": {"keep": 5, "mode": "incremental"}, "daily": {"keep": 5}},
    )
    d = daemons.start(cfg)
    settings = load_settings(config, environ={})
    rt = Configured.of(settings, resolve_paths(settings, environ={}, cwd=tmp_path)).runtime
    start = int(datetime.now(UTC).timestamp()) + 1
    stamps = [f"inc_{datetime.fromtimestamp(start + i, UTC):%Y%m%d_%H%M%S}" for i in range(12)]
    for name in stamps:
        jobs.run_backup(rt, policy="daily", archive_name=name)

    def inside() -> bool:
        now = f"inc_{datetime.now(UTC):%Y%m%d_%H%M%S}"
        return stamps[0] <= now <= stamps[-4]

    wait_until(inside, what="a second an archive is named after")
    got = str(d.request("backup", policy="inc")["archive"])
    base, _, suffix = got.rpartition("-")
    assert base in stamps and suffix == "2", got
    assert d.request("verify", archive=got)["kind"] == "incremental"
    assert d.request("verify", archive=base).get("kind", "archive") == "archive"
