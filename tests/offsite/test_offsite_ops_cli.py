"""`verify --offsite [NAME|--latest]` and `prune --offsite [--dry-run]` through the real CLI
(subprocesses) against SeaweedFS and a file:// directory, on copies of real backups."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import obstore
import pytest
from pyrage import x25519

from backup_sidecar import jobs
from backup_sidecar.archiver import DatabaseSpec
from backup_sidecar.jobs.offsite_prune import origin_of
from backup_sidecar.jobs.runtime import Runtime
from backup_sidecar.offsite import Lease, Store, parse_recipients
from support.cli import one_error_line, run_cli
from support.databases import make_db


@dataclass
class Site:
    root: Path
    rt: Runtime
    store: Store
    env: dict[str, str]
    identity: x25519.Identity
    key_file: Path

    def upload(self, policy: str) -> str:
        """A real backup of `policy`, uploaded encrypted (taking and releasing the lease)."""
        made = jobs.run_backup(self.rt, policy=policy)
        info = next(a for a in jobs.listing(self.rt, None) if a.name == made.name)
        lease = Lease(self.store, ttl=60)
        assert lease.acquire().writable
        try:
            recipients = parse_recipients([str(self.identity.to_public())])
            return self.store.upload(
                info.path, lease=lease, recipients=recipients, origin=origin_of(info)
            ).name
        finally:
            lease.release()

    def cli(self, *args: str, identity: bool = True) -> subprocess.CompletedProcess[str]:
        section: dict[str, object] = {
            "url": self.store.url,
            "keep": {"daily": 1},
            "encryption": {
                "recipients": [str(self.identity.to_public())],
                **({"identity_file": str(self.key_file)} if identity else {}),
            },
        }
        if self.store.target.scheme == "s3":
            section.update(endpoint=self.store.target.endpoint, path_style=True)
        config = self.root / "sidecar.yaml"
        config.write_text(
            json.dumps(
                {
                    "backup_dir": str(self.rt.backup_dir),
                    "databases": {"user": {"path": str(self.rt.databases["user"].path)}},
                    "policies": {"pre_restore": {"keep": 10}, "daily": {"keep": 5},
                                 "hourly": {"keep": 5}},
                    "offsite": section,
                }
            )
        )  # fmt: skip
        return run_cli(*args, config=config, env=self.env, cwd=self.root)


@pytest.fixture
def site(
    store: Store,
    backend: str,
    tmp_path: Path,
    age_identity: tuple[x25519.Identity, Path],
    request: pytest.FixtureRequest,
) -> Site:
    identity, key_file = age_identity
    user = make_db(tmp_path / "data" / "user_data.db", wal=True, rows=100)
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    rt = Runtime(
        backup_dir=backup_dir,
        databases={"user": DatabaseSpec(name="user", path=user)},
        keep={"daily": 5, "hourly": 5},
    )
    env: dict[str, str] = {}
    if backend == "s3":
        env = request.getfixturevalue("seaweed").env()
    return Site(tmp_path, rt, store, env, identity, key_file)


def test_verify_offsite_each_policy_named_and_latest(site: Site) -> None:
    """No name: the newest copy of each policy, ok, exit 0. A name: that copy. --latest: the
    newest copy only. A tampered copy: exit 1, one error line naming it. No identity file:
    exit 1, the copy `skipped`, saying the key is missing."""
    older = site.upload("daily")
    daily = site.upload("daily")
    hourly = site.upload("hourly")
    every = site.cli("verify", "--offsite", "--json")
    assert every.returncode == 0, every.stderr
    body = json.loads(every.stdout)
    assert body["ok"] is True
    assert {c["object"]: c["result"] for c in body["copies"]} == {daily: "ok", hourly: "ok"}
    named = site.cli("verify", "--offsite", older.removesuffix(".tar.gz.age"))
    assert named.returncode == 0, named.stderr
    assert named.stdout.strip() == f"{older}: ok (user)"
    latest = site.cli("verify", "--offsite", "--latest", "--json")
    assert [c["object"] for c in json.loads(latest.stdout)["copies"]] == [hourly]

    without = site.cli("verify", "--offsite", "--latest", identity=False)
    assert without.returncode == 1
    assert "skipped" in one_error_line(without) and "identity_file" in without.stderr

    key = site.store.key(daily)
    data = bytearray(obstore.get(site.store.objects.backend, key).bytes())
    data[-10] ^= 0xFF
    obstore.put(site.store.objects.backend, key, bytes(data))
    bad = site.cli("verify", "--offsite")
    assert bad.returncode == 1
    assert daily in one_error_line(bad)
    assert list(site.rt.backup_dir.glob("*.age")) == []


def test_prune_offsite_dry_run_then_real_and_refused_while_another_holds_the_lease(
    site: Site,
) -> None:
    """offsite.keep daily 1: --dry-run names the two older copies and deletes nothing; while
    another sidecar holds the prefix the prune is refused naming it (exit 1), nothing
    deleted; once it is free the prune deletes them and keeps the newest and `hourly`'s."""
    names = [site.upload("daily") for _ in range(3)]
    hourly = site.upload("hourly")
    dry = site.cli("prune", "--offsite", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert sorted(d["object"] for d in json.loads(dry.stdout)["deleted"]) == sorted(names[:2])
    every = {o.name for o in site.store.list().objects}
    assert every == {*names, hourly}

    holder = Lease(site.store, ttl=300)
    assert holder.acquire().writable
    try:
        refused = site.cli("prune", "--offsite")
        assert refused.returncode == 1
        assert "pid" in one_error_line(refused)
        assert {o.name for o in site.store.list().objects} == every
    finally:
        holder.release()
    done = site.cli("prune", "--offsite")
    assert done.returncode == 0, done.stderr
    assert {o.name for o in site.store.list().objects} == {names[-1], hourly}
