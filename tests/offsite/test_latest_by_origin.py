"""Which offsite copy is the newest for `restore --latest --from-offsite`, `init
--restore-from-offsite` and `verify --offsite --latest`: the one made last (its record's
origin: creation sequence, then creation time), never the one uploaded last, and a host
rebuilt from offsite goes on above the sequences of its former self. Real CLI, file:// store
(the code path of S3), uploads made as the daemon's uploader makes them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from backup_sidecar import archiver
from backup_sidecar.offsite import Lease
from support.daemon import DaemonRunner, quiet_config
from support.offsitehost import Host, events, insert, store_of, upload
from support.waiting import wait_until


def _modified(url: str, name: str) -> float:
    [obj] = [o for o in store_of(url).list().objects if o.name == name]
    return obj.modified.timestamp()


@pytest.mark.parametrize("late", ["keep_raised", "uploaded_again"])
def test_latest_is_the_newest_backup_not_the_last_upload(tmp_path: Path, late: str) -> None:
    """The newer `daily` archive (NEWER row) is offsite first; the older one is uploaded after
    it: `offsite.keep` raised (older archives sent after the newest), or its object sent again
    (renamed and renamed back, an S3 self-copy moving Last-Modified). `restore --latest`, `init
    --restore-from-offsite` and `verify --offsite --latest` all take the newer backup (they
    took the last upload: the NEWER row lost in a disaster recovery, no warning)."""
    url = f"file://{tmp_path / 'offsite'}"
    host = Host(tmp_path / "a", url, {"daily": {"keep": 5}}).make("a")
    older = host.backup("daily", "daily_20261207_010000")
    insert(host.user, "NEWER")
    newer = host.backup("daily", "daily_20261207_020000")
    expected = host.state()
    if late == "uploaded_again":
        upload(url, older)
    newest = upload(url, newer)
    if late == "uploaded_again":
        store = store_of(url)
        lease = Lease(store, ttl=300)
        assert lease.acquire().writable
        store.delete(older.name, lease=lease)
        lease.release()
    last = upload(url, older)
    assert _modified(url, last) > _modified(url, newest)  # the older one is the last upload

    verify = host.cli("verify", "--offsite", "--latest", "--json")
    assert verify.returncode == 0, verify.stderr
    assert [c["object"] for c in json.loads(verify.stdout)["copies"]] == [newest]
    host.wipe()
    latest = host.cli("restore", "--latest", "--from-offsite", "--force", "--json")
    assert latest.returncode == 0, latest.stderr
    assert json.loads(latest.stdout)["archive"] == "daily_20261207_020000"
    assert host.state() == expected
    host.wipe()
    init = host.cli("init", "--restore-from-offsite")
    assert init.returncode == 0, init.stderr
    restored = {e["database"]: e["archive"] for e in events(init, "offsite_restored")}
    assert restored == {"user": "daily_20261207_020000", "arrow": "daily_20261207_020000"}
    assert host.state() == expected


def test_a_rebuilt_hosts_next_backup_is_the_latest(tmp_path: Path) -> None:
    """A lost host's copies are at sequences 1-3. Rebuilt, it brings back an older copy by
    name (its fresh backup directory would start again at 2, below its former self's 3):
    the restore lists the store and raises the counter, so its next backup (REBUILT row) is
    sequence 4 and the one `restore --latest --from-offsite` takes after a second loss."""
    url = f"file://{tmp_path / 'offsite'}"
    host = Host(tmp_path / "a", url, {"daily": {"keep": 5}}).make("a")
    for hour in (1, 2, 3):
        insert(host.user, f"ROW{hour}")
        upload(url, host.backup("daily", f"daily_20261207_0{hour}0000"))
    host.wipe()

    named = host.cli("restore", "daily_20261207_010000", "--from-offsite", "--force")
    assert named.returncode == 0, named.stderr
    insert(host.user, "REBUILT")
    rebuilt = host.backup("daily", "daily_20261206_000000")  # its clock is a day behind too
    assert archiver.read_manifest(rebuilt).sequence == 4
    upload(url, rebuilt)
    expected = host.state()
    host.wipe()

    latest = host.cli("restore", "--latest", "--from-offsite", "--force", "--json")
    assert latest.returncode == 0, latest.stderr
    assert json.loads(latest.stdout)["archive"] == "daily_20261206_000000"
    assert host.state() == expected


def test_a_rebuilt_hosts_uploader_raises_the_sequence_before_its_next_backup(
    daemons: DaemonRunner, tmp_path: Path, sock_dir: Path
) -> None:
    """A lost host's copies are at sequences 1-3; rebuilt with an empty backup directory (its
    databases brought back some other way), its daemon's first upload pass lists the prefix
    and raises the counter (`archive_sequence_raised`, 3) before anything else: its next
    backup is sequence 4, uploaded, and the one `restore --latest --from-offsite` takes (it
    was sequence 1, below its former self's copies)."""
    url = f"file://{tmp_path / 'offsite'}"
    host = Host(tmp_path / "a", url, {"daily": {"keep": 5}}).make("a")
    for hour in (1, 2, 3):
        upload(url, host.backup("daily", f"daily_20261207_0{hour}0000"))
    shutil.rmtree(host.backups)  # the lost host's backup directory (and its counter)
    host.backups.mkdir()
    insert(host.user, "REBUILT")
    config = quiet_config(
        backup_dir=host.backups,
        databases={"user": host.user, "arrow": host.arrow},
        socket_path=sock_dir / "control.sock",
        offsite={"url": url},
        policies={"pre_restore": {"keep": 100}, "daily": {"keep": 5}},
    )
    d = daemons.start(config)
    raised = d.log.wait("archive_sequence_raised", source="offsite")
    assert raised["sequence"] == 3
    made = d.request("backup", policy="daily")["archive"]
    assert archiver.read_manifest(host.backups / f"{made}.tar.gz").sequence == 4
    wait_until(
        lambda: f"{made}.tar.gz" in {o.name for o in store_of(url).list().objects if o.confirmed},
        what="the rebuilt host's backup confirmed offsite",
    )
    dry = host.cli("restore", "--latest", "--from-offsite", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["archive"] == made
