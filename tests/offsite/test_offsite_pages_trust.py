"""Which incremental backups offsite a sidecar trusts (outside attack on issue 16, item 2): two
sidecars share a prefix under the same incremental policy name, A backing up `user` and
`audit`, B only `user` (its rows EVIL), B's backup uploaded last. A's `restore --latest
--from-offsite`, `init --restore-from-offsite` and `verify --offsite --latest` take A's own
backup, never B's, and each sidecar's default verify (the scheduled verify's choice) checks its
own copy: the rule offsite retention applies to archives and page stores alike (the policy's
exact database set). Real backups, the real in-process uploader, the real CLI, file://."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from backup_sidecar import jobs
from support.cli import clean_env, run_cli
from support.databases import dump, make_db
from support.offsite_pages import Site, incremental_site, offsite_place


def _evil(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO items(body) VALUES ('EVIL')")
    conn.commit()
    conn.close()


def _uploaded(site: Site) -> None:
    """One upload pass of ``site``, its lease then released (the other sidecar's turn)."""
    assert site.uploader.sync() == 1
    site.uploader.stop()


def _json(site: Site, *args: str, env: dict[str, str]) -> tuple[int, Any]:
    done = run_cli(*args, "--json", config=site.config, env=env)
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else done.stderr


def test_another_sidecars_incremental_backup_of_another_set_is_not_taken(
    tmp_path: Path,
) -> None:
    """A (`user`, `audit`) and B (`user` only) share the prefix under `hourly`; B's backup is
    the newest upload. A's `restore --latest --from-offsite` restores both databases from A's
    own backup (B's EVIL row nowhere), its `verify --offsite --latest` checks A's backup, as
    does A's default verify; B's default verify checks B's backup, never A's; A's `init
    --restore-from-offsite` on a lost host restores A's backup."""
    section, environ, _ = offsite_place("file", tmp_path)
    a_dbs = {
        "user": make_db(tmp_path / "a" / "data" / "user.db", wal=True, rows=60, tag="a-user"),
        "audit": make_db(tmp_path / "a" / "data" / "audit.db", wal=False, rows=30, tag="a-au"),
    }
    b_user = make_db(tmp_path / "b" / "data" / "user.db", wal=True, rows=40, tag="b-user")
    _evil(b_user)
    a = incremental_site(tmp_path / "a", a_dbs, offsite=section, environ=environ)
    b = incremental_site(tmp_path / "b", {"user": b_user}, offsite=section, environ=environ)
    ours = jobs.run_backup(a.rt, policy="hourly", archive_name="hourly_20261207_010000").name
    _uploaded(a)
    theirs = jobs.run_backup(b.rt, policy="hourly", archive_name="hourly_20261207_020000").name
    _uploaded(b)
    expected = {name: dump(path) for name, path in a_dbs.items()}
    env = clean_env(**environ)

    code, verified = _json(a, "verify", "--offsite", "--latest", env=env)
    assert code == 0, verified
    assert [c["object"].split("/")[-1] for c in verified["copies"]] == [f"{ours}.json"]
    code, verified = _json(a, "verify", "--offsite", env=env)
    assert code == 0, verified
    assert [c["object"].split("/")[-1] for c in verified["copies"]] == [f"{ours}.json"]
    code, verified = _json(b, "verify", "--offsite", env=env)
    assert code == 0, verified
    assert [c["object"] for c in verified["copies"]] == [f"pages/user/manifests/{theirs}.json"]

    shutil.rmtree(tmp_path / "a" / "data")
    shutil.rmtree(tmp_path / "a" / "backups")
    code, latest = _json(a, "restore", "--latest", "--from-offsite", "--force", env=env)
    assert code == 0, latest
    assert latest["databases"] == {"audit": ours, "user": ours}
    assert {name: dump(path) for name, path in a_dbs.items()} == expected
    assert not any("EVIL" in row for row in dump(a_dbs["user"]))

    shutil.rmtree(tmp_path / "a" / "data")
    shutil.rmtree(tmp_path / "a" / "backups")
    init = run_cli("init", "--restore-from-offsite", config=a.config, env=env)
    assert init.returncode == 0, init.stderr
    assert {name: dump(path) for name, path in a_dbs.items()} == expected
