"""What `prune` reports for incremental policies (outside attack on issue 16, item 8): a page
store whose garbage collection refuses (a FIFO, directory or link planted in manifests/) fails
the CLI prune in one line, like an archive it could not delete, until the cause goes; and
`--dry-run --json` lists the incremental backups it keeps, with the rules keeping them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from support.cli import one_error_line, run_cli
from support.databases import Writer, make_db
from support.incremental import incremental_config, manifests


def _site(tmp_path: Path, keep: str) -> tuple[Path, Path, list[str]]:
    """(config, backup dir, backup names oldest first): arrow (rollback journal) and user
    (WAL, a writer committing), three backups of the incremental policy `hourly`."""
    dbs = {
        "arrow": make_db(tmp_path / "data" / "arrow.db", wal=False, rows=100),
        "user": make_db(tmp_path / "data" / "user.db", wal=True, rows=200),
    }
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    config = incremental_config(tmp_path / "sidecar.yaml", backup_dir, dbs, keep=keep)
    writer = Writer.start(dbs["user"], rate=100)
    try:
        for _ in range(3):
            made = run_cli("backup", "--policy", "hourly", config=config)
            assert made.returncode == 0, made.stderr
    finally:
        writer.stop()
    return config, backup_dir, manifests(backup_dir, "user")


def _plant(manifests_dir: Path, kind: str) -> Path:
    planted = manifests_dir / "planted.json"
    if kind == "fifo":
        os.mkfifo(planted)
    elif kind == "dir":
        planted.mkdir()
    else:
        planted.symlink_to(manifests_dir / "elsewhere.json")
    return planted


@pytest.mark.parametrize("kind", ["fifo", "dir", "link"])
def test_a_refused_garbage_collection_fails_the_prune_until_its_cause_goes(
    tmp_path: Path, kind: str
) -> None:
    """keep 1 over three backups, a FIFO / directory / link planted in user's manifests/: the
    prune deletes the two expired backups, then user's GC refuses: exit 1 with one error line
    naming the page store ('user'), `--json` lists it in errors, and the next prune says so
    again (the GC is owed); once the planted entry goes, the next prune collects the store
    and exits 0."""
    config, backup_dir, names = _site(tmp_path, keep="1")
    planted = _plant(backup_dir / "pages" / "user" / "manifests", kind)
    pruned = run_cli("prune", "--policy", "hourly", config=config)
    assert pruned.returncode == 1, pruned.stderr
    line = one_error_line(pruned)
    assert "page store 'user'" in line and "garbage collection" in line
    for name in names[:2]:
        assert f"deleted {backup_dir}/pages/arrow/manifests/{name}.json" in pruned.stdout
    assert manifests(backup_dir, "arrow") == names[2:]
    again = run_cli("prune", "--policy", "hourly", "--json", config=config)
    assert again.returncode == 1, again.stderr
    assert any("page store 'user'" in e for e in json.loads(again.stdout)["errors"])
    if kind == "dir":
        planted.rmdir()
    else:
        planted.unlink()
    clean = run_cli("prune", "--policy", "hourly", config=config)
    assert clean.returncode == 0, clean.stderr
    assert not (backup_dir / "pages" / ".gc" / "user" / "due").exists()


def test_dry_run_json_lists_the_incremental_backups_it_keeps_with_why(tmp_path: Path) -> None:
    """keep 2 over three backups: `prune --dry-run --json` lists the oldest under deleted and
    the two newest under kept with their rules (`last 1`, `last 2`), as for archives; nothing
    is deleted."""
    config, backup_dir, names = _site(tmp_path, keep="2")
    dry = run_cli("prune", "--policy", "hourly", "--dry-run", "--json", config=config)
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["deleted"] == names[:1]
    assert {k["archive"]: (k["policy"], k["reasons"]) for k in report["kept"]} == {
        names[2]: ("hourly", ["last 1"]),
        names[1]: ("hourly", ["last 2"]),
    }
    assert manifests(backup_dir, "user") == names
