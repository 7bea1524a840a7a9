"""Kill -9 during the upload of an incremental backup's packs (issue 16): nothing the store
confirms is other than whole, the backup does not count as offsite, and the next pass
completes it (s3 and file://)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backup_sidecar import jobs
from backup_sidecar.jobs.offsite_pagelist import page_copies
from backup_sidecar.offsite import Lease
from backup_sidecar.offsite.pagekeys import list_pages
from support.databases import make_db
from support.offsite import Sidecar
from support.offsite_pages import Place, confirmed_manifests, incremental_site, offsite_place
from support.waiting import wait_until

CHILD = Path(__file__).parents[1] / "support" / "offsite_pages_child.py"


@pytest.fixture
def place(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Place:
    return offsite_place(backend, tmp_path, request)


def _pass(config: Path, environ: dict[str, str], stall_at: int) -> Sidecar:
    process = subprocess.Popen(
        [sys.executable, str(CHILD), str(config), str(stall_at)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, **environ},
    )
    return Sidecar(process)


def test_kill_mid_pack_leaves_nothing_confirmed_that_is_not_whole(
    tmp_path: Path, place: Place
) -> None:
    """Two databases, one pack each: the pass is SIGKILLed while the second database's pack
    is in the store's stream. Every object the store then confirms hashes (deep) to its
    record; the backup is listed unconfirmed (user has no manifest); a new pass (after the
    killed holder's lease expired) sends the rest and every object is confirmed, deep."""
    section, environ, store = place
    dbs = {
        "user": make_db(tmp_path / "data" / "user.db", wal=True, rows=500),
        "audit": make_db(tmp_path / "data" / "audit.db", wal=False, rows=200),
    }
    site = incremental_site(tmp_path, dbs, offsite={**section, "lease_ttl": "1s"}, environ=environ)
    name = jobs.run_backup(site.rt, policy="hourly").name
    child = _pass(site.config, environ, stall_at=2)
    try:
        line = child.says(timeout=120)
        while line != "stalled":  # its log lines come first
            line = child.says(timeout=120)
        child.kill()
    finally:
        if child.process.poll() is None:
            child.process.kill()
        child.process.wait()
        for pipe in (child.process.stdin, child.process.stdout):
            if pipe is not None:
                pipe.close()
    listing = list_pages(store, encrypted_only=False)
    confirmed = [o.name for o in listing.objects if o.confirmed]
    assert f"pages/audit/manifests/{name}.json" in confirmed
    assert not any(n.startswith("pages/user/") for n in confirmed), confirmed
    for obj in confirmed:
        assert store.confirm(obj, deep=True).confirmed, obj
    (copy,) = page_copies(listing)
    assert not copy.confirmed

    def free() -> bool:  # the killed holder's lease expired (on the store's clock)
        lease = Lease(store, ttl=1)
        taken = lease.acquire().writable
        if taken:
            lease.release()
        return taken

    wait_until(free, what="the killed pass's lease expired")
    after = _pass(site.config, environ, stall_at=0)
    try:
        line = after.says(timeout=120)
        while not line.startswith("done"):  # its log lines come first
            line = after.says(timeout=120)
    finally:
        after.process.wait()
        for pipe in (after.process.stdin, after.process.stdout):
            if pipe is not None:
                pipe.close()
    assert line == "done 1", line
    listing = list_pages(store, encrypted_only=False)
    assert all(o.confirmed for o in listing.objects)
    assert confirmed_manifests(store) == {f"user/{name}", f"audit/{name}"}
    for done in listing.objects:
        assert store.confirm(done.name, deep=True).confirmed, done.name
    (copy,) = page_copies(listing)
    assert copy.confirmed
