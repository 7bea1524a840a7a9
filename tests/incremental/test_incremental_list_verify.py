"""`list` shows incremental backups beside archives (kind, check, status), `verify NAME`
rebuilds and checks one, and only then is it listed `verified`; real CLI processes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from backup_sidecar.jobs.pagestores import pages_root
from support.cli import one_error_line, run_cli
from support.databases import make_db
from support.incremental import incremental_config


def _setup(tmp_path: Path, backup_dir: Path) -> Path:
    user = make_db(tmp_path / "user_data.db", wal=True, rows=2000)
    arrow = make_db(tmp_path / "arrow_database.db", wal=False, rows=300)
    cfg = incremental_config(
        tmp_path / "sidecar.yaml", backup_dir, {"user": user, "arrow": arrow}, check="quick"
    )
    for args in (["--policy", "hourly"], ["--name", "full_one"], ["--policy", "hourly"]):
        result = run_cli("backup", *args, "--json", config=cfg)
        assert result.returncode == 0, result.stderr
    return cfg


def _listed(cfg: Path) -> list[dict[str, object]]:
    result = run_cli("list", "--json", config=cfg)
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def test_list_shows_incrementals_beside_archives_and_verify_marks_them(
    tmp_path: Path, backup_dir: Path
) -> None:
    """Newest first by creation sequence, archives and incrementals interleaved; an
    incremental is `unverified` with its kind and check until `verify NAME` rebuilt it and
    its SHA-256, integrity_check and row counts matched; the text table says the kind."""
    cfg = _setup(tmp_path, backup_dir)
    listed = _listed(cfg)
    assert [(a["kind"], a["sequence"]) for a in listed] == [
        ("incremental", 3), ("archive", 2), ("incremental", 1)
    ]  # fmt: skip
    newest = listed[0]
    assert (newest["status"], newest["check"], newest["verified"]) == ("unverified", "quick", False)
    assert newest["databases"] == ["arrow", "user"] and newest["policy"] == "hourly"
    assert listed[1]["check"] == "full"
    result = run_cli("verify", str(newest["name"]), "--json", config=cfg)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["kind"] == "incremental"
    statuses = [a["status"] for a in _listed(cfg)]
    assert statuses == ["verified", "verified", "unverified"]
    table = run_cli("list", config=cfg).stdout
    assert f"{newest['name']}" in table and "(incremental, check quick)" in table


def test_verify_of_a_damaged_pack_fails_naming_the_backup(tmp_path: Path, backup_dir: Path) -> None:
    """A flipped byte in a pack: verify exits 1 with one line naming the backup, and the
    backup stays `unverified`."""
    cfg = _setup(tmp_path, backup_dir)
    first = _listed(cfg)[-1]
    for pack in (pages_root(backup_dir) / "user" / "packs").glob("*.pack"):
        data = bytearray(pack.read_bytes())
        data[len(data) // 3] ^= 0xFF
        pack.chmod(0o600)
        pack.write_bytes(bytes(data))
    result = run_cli("verify", str(first["name"]), config=cfg)
    assert result.returncode == 1
    assert str(first["name"]) in one_error_line(result)
    assert _listed(cfg)[-1]["status"] == "unverified"


def test_a_malformed_manifest_is_one_damaged_row_not_the_end_of_the_listing(
    tmp_path: Path, backup_dir: Path
) -> None:
    """A manifest that is not JSON: `list` still lists everything, that backup `damaged`
    with the reason naming it; `verify` of it fails with one line."""
    cfg = _setup(tmp_path, backup_dir)
    name = str(_listed(cfg)[0]["name"])
    (pages_root(backup_dir) / "user" / "manifests" / f"{name}.json").write_bytes(b"{nope")
    listed = _listed(cfg)
    assert len(listed) == 3
    broken = next(a for a in listed if a["name"] == name)
    assert broken["status"] == "damaged" and "malformed" in str(broken["error"])
    result = run_cli("verify", name, config=cfg)
    assert result.returncode == 1 and name in one_error_line(result)


def test_a_backup_missing_one_databases_manifest_is_damaged_and_never_restored(
    tmp_path: Path, backup_dir: Path
) -> None:
    """A backup of two databases whose user manifest is missing (a kill between the two
    databases leaves that; the job removes them on any error it sees) is listed `damaged`
    naming the database, and `restore` refuses it with one line, changing nothing."""
    cfg = _setup(tmp_path, backup_dir)
    name = str(_listed(cfg)[0]["name"])
    (pages_root(backup_dir) / "user" / "manifests" / f"{name}.json").unlink()
    broken = next(a for a in _listed(cfg) if a["name"] == name)
    assert broken["status"] == "damaged" and "user" in str(broken["error"])
    live = tmp_path / "arrow_database.db"
    before = live.read_bytes()
    result = run_cli("restore", name, "--force", config=cfg)
    assert result.returncode == 1 and name in one_error_line(result)
    assert live.read_bytes() == before


def test_an_older_manifest_copied_over_a_newer_one_is_damaged_never_the_newer_backup(
    tmp_path: Path, backup_dir: Path
) -> None:
    """The page-store form of `cat older > newer` (outside attack, issue 15): the older
    backup's manifests copied over the newer one's, times put back. `list` shows the newer
    backup `damaged`, naming the manifest whose recorded name is not its file's; `verify` and
    `restore` of it fail with one line and the live database is untouched; the older backup
    still verifies."""
    cfg = _setup(tmp_path, backup_dir)
    listed = _listed(cfg)
    newer, older = str(listed[0]["name"]), str(listed[-1]["name"])
    for db in ("user", "arrow"):
        manifests = pages_root(backup_dir) / db / "manifests"
        target = manifests / f"{newer}.json"
        before = target.stat()
        target.chmod(0o600)
        target.write_bytes((manifests / f"{older}.json").read_bytes())
        os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    broken = next(a for a in _listed(cfg) if a["name"] == newer)
    assert broken["status"] == "damaged" and "not the file's name" in str(broken["error"])
    assert run_cli("verify", older, config=cfg).returncode == 0
    live = tmp_path / "user_data.db"
    before_bytes = live.read_bytes()
    for args in (["verify", newer], ["restore", newer, "--force"]):
        result = run_cli(*args, config=cfg)
        assert result.returncode == 1 and newer in one_error_line(result)
    assert live.read_bytes() == before_bytes


def test_two_databases_manifests_swapped_are_damaged_never_restored_crosswise(
    tmp_path: Path, backup_dir: Path
) -> None:
    """The `user` and `arrow` manifests of one backup swapped between their page stores and
    each store's packs copied into the other (outside attack, issue 16): `list` shows the
    backup `damaged` naming the swap; `verify`, `restore` and `export` fail with one line and
    no live database changes. Before, verify said ok and the restore wrote arrow's data into
    user_data.db and user's into arrow_database.db."""
    cfg = _setup(tmp_path, backup_dir)
    name = str(_listed(cfg)[0]["name"])
    stores = {db: pages_root(backup_dir) / db for db in ("user", "arrow")}
    user_m, arrow_m = (stores[db] / "manifests" / f"{name}.json" for db in ("user", "arrow"))
    user_bytes = user_m.read_bytes()
    for path in (user_m, arrow_m):
        path.chmod(0o600)
    user_m.write_bytes(arrow_m.read_bytes())
    arrow_m.write_bytes(user_bytes)
    for db, other in (("user", "arrow"), ("arrow", "user")):
        for pack in (stores[db] / "packs").glob("*.pack"):
            target = stores[other] / "packs" / pack.name
            if not target.exists():
                shutil.copyfile(pack, target)
    broken = next(a for a in _listed(cfg) if a["name"] == name)
    assert broken["status"] == "damaged" and "moved or swapped" in str(broken["error"])
    live = {
        db: tmp_path / f"{f}.db" for db, f in (("user", "user_data"), ("arrow", "arrow_database"))
    }
    before = {db: path.read_bytes() for db, path in live.items()}
    for args in (
        ["verify", name],
        ["restore", name, "--force"],
        ["export", name, "--out", str(tmp_path / "x.tar.gz")],
    ):
        result = run_cli(*args, config=cfg)
        assert result.returncode == 1 and name in one_error_line(result), result.stderr
    assert {db: path.read_bytes() for db, path in live.items()} == before
    assert not (tmp_path / "x.tar.gz").exists()
