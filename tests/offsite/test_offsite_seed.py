"""`init --restore-from-offsite` against a file:// store through the real CLI: a damaged newest
copy is passed over for the next newest, and a plaintext object planted in an encrypted store
is never a candidate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from pyrage import x25519

from backup_sidecar.offsite import Lease, Store, parse_recipients, parse_target
from support.cli import cli_env, is_log_record, run_cli
from support.databases import dump, integrity, make_db
from support.offsite import fast_retry


def _events(result: subprocess.CompletedProcess[str], event: str) -> list[dict[str, Any]]:
    records = [json.loads(ln) for ln in result.stderr.splitlines() if is_log_record(ln)]
    return [r for r in records if r["event"] == event]


def test_a_damaged_newest_copy_is_passed_over_and_plaintext_never_used(tmp_path: Path) -> None:
    """Three `full` copies: the oldest good, the next tampered in place (same size, same date,
    so the listing still confirms it; its bytes fail the download's checksum), the newest a
    plaintext object in an encrypted store. The lost host's init restores both databases
    from the oldest, logs the tampered one as passed over, never downloads the plaintext one,
    and exits 0."""
    data, backups = tmp_path / "data", tmp_path / "backups"
    user = make_db(data / "user_data.db", wal=True, rows=60, tag="user")
    arrow = make_db(data / "arrow_database.db", wal=False, rows=40, tag="arrow")
    backups.mkdir()
    identity = x25519.Identity.generate()
    key = tmp_path / "age.key"
    key.write_text(f"{identity}\n")
    key.chmod(0o600)
    url = f"file://{tmp_path / 'offsite'}"
    config = tmp_path / "sidecar.yaml"
    offsite = {"url": url, "encryption": {"recipients": [str(identity.to_public())],
                                          "identity_file": str(key)}}  # fmt: skip
    config.write_text(json.dumps({"policies": {"full": {"keep": 5}}, "offsite": offsite}))
    env = cli_env(backups, user=user)
    store = Store(parse_target(url), retry=fast_retry())
    lease = Lease(store, ttl=300)
    assert lease.acquire().writable
    recipients = parse_recipients([str(identity.to_public())])
    good, tampered, planted = (f"full_20261207_0{h}0000" for h in (1, 2, 3))
    before = {"user": dump(user), "arrow": dump(arrow)}
    for name in (good, tampered, planted):
        made = run_cli("backup", "--policy", "full", "--name", name, config=config, env=env)
        assert made.returncode == 0, made.stderr
        archive = backups / f"{name}.tar.gz"
        store.upload(archive, lease=lease, recipients=() if name == planted else recipients)
    lease.release()
    stored = tmp_path / "offsite" / f"{tampered}.tar.gz.age"
    stat = stored.stat()
    with stored.open("r+b") as f:  # in place: same inode, same size
        f.seek(stat.st_size // 2)
        byte = f.read(1)
        f.seek(stat.st_size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(stored, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert f"{tampered}.tar.gz.age" in {o.name for o in store.list().objects if o.confirmed}
    shutil.rmtree(backups)  # the lost host
    shutil.rmtree(data)

    result = run_cli("init", "--restore-from-offsite", config=config, env=env)
    assert result.returncode == 0, result.stderr
    restored = {e["database"]: e["archive"] for e in _events(result, "offsite_restored")}
    assert restored == {"user": good, "arrow": good}
    failed = _events(result, "offsite_restore_candidate_failed")
    assert [e["archive"] for e in failed] == [tampered], failed
    downloaded = {e["archive"] for e in _events(result, "offsite_download_completed")}
    assert planted not in downloaded
    assert {"user": dump(user), "arrow": dump(arrow)} == before
    assert integrity(user) == "ok" and integrity(arrow) == "ok"
