"""A sidecar host on a shared offsite store, driven through the real CLI, and uploads made as
the daemon's uploader makes them (the record carrying the archive's origin): the helpers of
the offsite trust and ordering tests."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyrage import x25519

from backup_sidecar import archiver
from backup_sidecar.offsite import Lease, Origin, Store, parse_target
from support.cli import cli_env, is_log_record, run_cli
from support.databases import dump, make_db
from support.offsite import fast_retry


@dataclass
class Host:
    """A sidecar's databases, backup directory and configuration, on a shared offsite store."""

    root: Path
    url: str
    policies: dict[str, Any]
    offsite: dict[str, Any] = field(default_factory=dict)

    @property
    def user(self) -> Path:
        return self.root / "data" / "user_data.db"

    @property
    def arrow(self) -> Path:
        return self.root / "data" / "arrow_database.db"

    @property
    def backups(self) -> Path:
        return self.root / "backups"

    @property
    def config(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "sidecar.yaml"
        section = {"url": self.url, **self.offsite}
        path.write_text(json.dumps({"policies": self.policies, "offsite": section}))
        return path

    def make(self, tag: str) -> Host:
        make_db(self.user, wal=True, rows=20, tag=f"{tag}-user")
        make_db(self.arrow, wal=False, rows=10, tag=f"{tag}-arrow")
        self.backups.mkdir(parents=True, exist_ok=True)
        return self

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = cli_env(self.backups, user=self.user)
        return run_cli(*args, config=self.config, env=env, timeout=120)

    def backup(self, policy: str, name: str) -> Path:
        made = self.cli("backup", "--policy", policy, "--name", name)
        assert made.returncode == 0, made.stderr
        return self.backups / f"{name}.tar.gz"

    def state(self) -> dict[str, list[str]]:
        return {"user": dump(self.user), "arrow": dump(self.arrow)}

    def wipe(self) -> None:
        """A lost host: no backup directory, no databases."""
        shutil.rmtree(self.backups)
        shutil.rmtree(self.root / "data")


def store_of(url: str) -> Store:
    return Store(parse_target(url), retry=fast_retry())


def upload(
    url: str,
    archive: Path,
    *,
    recipients: tuple[x25519.Recipient, ...] = (),
    sequence: int | None = None,
) -> str:
    """Upload as the daemon does, its record carrying the archive's origin (``sequence``: a
    hand-made record's claim instead of the archive's own)."""
    store = store_of(url)
    lease = Lease(store, ttl=300)
    assert lease.acquire().writable
    manifest = archiver.read_manifest(archive)
    origin = Origin(
        policy=manifest.policy,
        sequence=manifest.sequence if sequence is None else sequence,
        created_at=manifest.created_at,
        databases=tuple(sorted(manifest.members())),
    )
    try:
        return store.upload(archive, lease=lease, recipients=recipients, origin=origin).name
    finally:
        lease.release()


def events(result: subprocess.CompletedProcess[str], event: str) -> list[dict[str, Any]]:
    records = [json.loads(ln) for ln in result.stderr.splitlines() if is_log_record(ln)]
    return [r for r in records if r["event"] == event]


def insert(db: Path, body: str) -> None:
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO items(body) VALUES (?)", (body,))
    conn.commit()
    conn.close()
