"""Disaster recovery end to end: a real daemon backs up real databases (WAL with a writer process
running, and rollback journal) and uploads age-encrypted copies to the session's SeaweedFS;
then the host is lost (backup directory and databases gone). With only the configuration and
the identity file, `restore --latest --from-offsite --force`, or the start hook's
`init --restore-from-offsite`, brings every database back: same rows, integrity_check ok,
equal dumps."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyrage import x25519

from backup_sidecar.offsite import Store
from support.cli import clean_env, is_log_record, one_error_line, run_cli
from support.daemon import Daemon, DaemonRunner, quiet_config, write_config
from support.databases import Writer, count, dump, integrity, make_db
from support.metrics import free_port
from support.offsite import fast_retry, s3_store
from support.seaweed import SeaweedServer
from support.waiting import wait_until


@dataclass
class Host:
    """One host's databases and backup directory (``root``, lost in a disaster) and what the
    operator kept elsewhere: the configuration and the identity file (``kept``)."""

    root: Path
    kept: Path
    config: dict[str, Any]
    env: dict[str, str]
    store: Store

    @property
    def user(self) -> Path:
        return self.root / "data" / "user_data.db"

    @property
    def arrow(self) -> Path:
        return self.root / "data" / "arrow_database.db"

    @property
    def config_path(self) -> Path:
        return self.kept / "sidecar.yaml"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, config=self.config_path, env=self.env, timeout=300, cwd=self.kept)

    def state(self) -> dict[str, list[str]]:
        return {"user": dump(self.user), "arrow": dump(self.arrow)}

    def confirmed(self) -> set[str]:
        return {o.name for o in self.store.list().objects if o.confirmed}

    def lose(self) -> None:
        """The host is gone: databases, their journals and every local archive."""
        shutil.rmtree(self.root)


@pytest.fixture
def host(tmp_path: Path, sock_dir: Path, seaweed: SeaweedServer, shared_bucket: str) -> Host:
    """Two databases, an offsite section with age encryption, the identity kept apart."""
    root, kept = tmp_path / "host", tmp_path / "kept"
    kept.mkdir()
    make_db(root / "data" / "user_data.db", wal=True, rows=400, tag="user")
    make_db(root / "data" / "arrow_database.db", wal=False, rows=250, tag="arrow")
    (root / "backups").mkdir()
    identity = x25519.Identity.generate()
    key = kept / "age.key"
    key.write_text(f"# public key: {identity.to_public()}\n{identity}\n")
    key.chmod(0o600)
    prefix = f"dr-{tmp_path.name}"
    config = quiet_config(
        backup_dir=root / "backups",
        databases={
            "user": root / "data" / "user_data.db",
            "arrow": root / "data" / "arrow_database.db",
        },
        socket_path=sock_dir / "control.sock",
        policies={
            "pre_restore": {"keep": 10},
            "full": {"keep": 5},
            "users": {"keep": 5, "databases": ["user"]},
        },
        offsite={
            "url": f"s3://{shared_bucket}/{prefix}",
            "endpoint": seaweed.endpoint,
            "path_style": True,
            "encryption": {"recipients": [str(identity.to_public())], "identity_file": str(key)},
        },
    )
    write_config(kept / "sidecar.yaml", config)
    env = clean_env(SIDECAR_LOG_FORMAT="json", **seaweed.env())
    store = s3_store(seaweed, shared_bucket, prefix, retry=fast_retry())
    return Host(root, kept, config, env, store)


def _backed_up(d: Daemon, host: Host, policy: str) -> str:
    """A backup of ``policy`` through the daemon, once confirmed offsite (its uploader)."""
    name = str(d.request("backup", policy=policy)["archive"])
    wait_until(lambda: f"{name}.tar.gz.age" in host.confirmed(), what=f"{name} confirmed offsite")
    return name


def _events(result: subprocess.CompletedProcess[str], event: str) -> list[dict[str, Any]]:
    records = [json.loads(ln) for ln in result.stderr.splitlines() if is_log_record(ln)]
    return [r for r in records if r["event"] == event]


def test_restore_latest_from_offsite_brings_a_lost_host_back(
    host: Host, daemons: DaemonRunner
) -> None:
    """Backups with a writer committing meanwhile, the last after it stopped; the host lost
    (no backup directory at all); `restore --latest --from-offsite --force` with the kept
    configuration and identity: both databases equal the last backup's (dump, row counts,
    integrity_check ok)."""
    d = daemons.start(host.config_path, env=host.env)
    writer = Writer.start(host.user, rate=200)
    try:
        wait_until(lambda: writer.committed() >= 20, what="the writer committing")
        _backed_up(d, host, "full")
        writer.stop()
    finally:
        writer.close()
    last = _backed_up(d, host, "full")
    before, rows = host.state(), count(host.user, "SELECT count(*) FROM ticks")
    assert rows >= 20
    assert d.stop() == 0
    host.lose()

    result = host.cli("restore", "--latest", "--from-offsite", "--force", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["archive"] == last
    assert host.state() == before
    assert count(host.user, "SELECT count(*) FROM ticks") == rows
    assert integrity(host.user) == "ok" and integrity(host.arrow) == "ok"


def test_init_restore_from_offsite_fills_only_what_lacks_content(
    host: Host, daemons: DaemonRunner
) -> None:
    """`init --restore-from-offsite` on a lost host: the user database comes from the newest
    copy (`users`, which holds only it) and the arrow database from the newest copy that holds
    it (`full`, older): each equals its own backup. Run again with content in place, it
    restores nothing and says each database was left alone. A zero-length file and a schema
    without tables count as lacking content."""
    d = daemons.start(host.config_path, env=host.env)
    full = _backed_up(d, host, "full")
    arrow_then = dump(host.arrow)
    conn = sqlite3.connect(host.user)  # the user database changes after the full backup
    conn.execute("INSERT INTO items(body) VALUES ('after the full backup')")
    conn.commit()
    conn.close()
    users = _backed_up(d, host, "users")
    user_then = dump(host.user)
    assert d.stop() == 0
    host.lose()

    result = host.cli("init", "--restore-from-offsite")
    assert result.returncode == 0, result.stderr
    restored = {e["database"]: e["archive"] for e in _events(result, "offsite_restored")}
    assert restored == {"user": users, "arrow": full}
    assert dump(host.user) == user_then and dump(host.arrow) == arrow_then
    assert integrity(host.user) == "ok" and integrity(host.arrow) == "ok"

    again = host.cli("init", "--restore-from-offsite")
    assert again.returncode == 0, again.stderr
    assert _events(again, "offsite_restored") == []
    skipped = {e["database"]: e["reason"] for e in _events(again, "offsite_restore_skipped")}
    assert skipped == {"user": "has content: left alone", "arrow": "has content: left alone"}

    host.arrow.write_bytes(b"")
    host.user.unlink()
    conn = sqlite3.connect(host.user)  # a SQLite file without any table: the header only
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    assert host.user.stat().st_size > 0
    third = host.cli("init", "--restore-from-offsite")
    assert third.returncode == 0, third.stderr
    assert {e["database"] for e in _events(third, "offsite_restored")} == {"user", "arrow"}
    assert dump(host.user) == user_then and dump(host.arrow) == arrow_then


def test_init_restore_from_offsite_exit_codes(host: Host, tmp_path: Path) -> None:
    """No offsite section: exit 2, one line, nothing created. An unreachable store: exit 1 and
    no database created empty in place of what offsite may hold. An empty prefix: exit 0, a
    warning, and init's usual empty databases."""
    host.lose()
    bare = dict(host.config)
    del bare["offsite"]
    write_config(host.kept / "bare.yaml", bare)
    no_section = run_cli("init", "--restore-from-offsite", config=host.kept / "bare.yaml",
                         env=host.env)  # fmt: skip
    assert no_section.returncode == 2
    assert "no offsite store configured" in one_error_line(no_section)
    assert not host.user.exists() and not host.arrow.exists()

    dead = {**host.config, "offsite": {**host.config["offsite"], "attempts": 1,
            "endpoint": f"http://127.0.0.1:{free_port()}"}}  # fmt: skip
    write_config(host.kept / "dead.yaml", dead)
    unreachable = run_cli("init", "--restore-from-offsite", config=host.kept / "dead.yaml",
                          env=host.env)  # fmt: skip
    assert unreachable.returncode == 1, unreachable.stderr
    one_error_line(unreachable)
    assert not host.user.exists() and not host.arrow.exists()

    empty = host.cli("init", "--restore-from-offsite")
    assert empty.returncode == 0, empty.stderr
    assert _events(empty, "offsite_restore_nothing")
    assert host.user.exists() and host.arrow.exists()
