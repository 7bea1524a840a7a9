"""`backup --json` of an incremental policy describes the backup it wrote as `list --json`
does: kind `incremental` and the check its policy ran (it said `archive` and `full`)."""

from __future__ import annotations

import json
from pathlib import Path

from support.cli import run_cli
from support.databases import make_db


def test_backup_json_names_an_incremental_backup_and_its_check(
    tmp_path: Path, backup_dir: Path
) -> None:
    """The real CLI on a `mode: incremental, check: quick` policy: the backup's JSON says
    kind `incremental`, check `quick`, the same as the listing's row of that backup."""
    user = make_db(tmp_path / "user_data.db", wal=True, rows=200)
    config = tmp_path / "sidecar.yaml"
    config.write_text(
        f"backup_dir: {backup_dir}\ndatabases:\n  user: {{path: {user}}}\n"
        "policies:\n  inc: {every: 1h, keep: 3, mode: incremental, check: quick}\n"
    )
    done = run_cli("backup", "--policy", "inc", "--json", config=config)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["kind"], out["check"]) == ("incremental", "quick")
    listed = run_cli("list", "--json", config=config)
    assert listed.returncode == 0, listed.stderr
    row = next(r for r in json.loads(listed.stdout) if r["name"] == out["name"])
    assert (row["kind"], row["check"]) == (out["kind"], out["check"])
