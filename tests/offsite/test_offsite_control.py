"""The control socket's offsite ops against a real daemon and the session's SeaweedFS (or a
file:// directory): `offsite_status` (lease verdict and holder, pending count, newest confirmed
copy per policy, last upload error, each clearing when its cause goes) and `restore` with
`"from": "offsite"` (download, verify, pre-restore, hot restore; refusals one line)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from pyrage import x25519

from backup_sidecar.errors import ControlError
from backup_sidecar.offsite import Lease, Store, parse_target
from support.archives import flip_database_byte
from support.cli import one_error_line
from support.daemon import Daemon, DaemonRunner, quiet_config
from support.databases import dump, integrity, make_db
from support.metrics import free_port
from support.offsite import fast_retry, s3_store
from support.seaweed import SeaweedServer
from support.waiting import wait_until


def _status(d: Daemon) -> dict[str, Any]:
    return d.request("offsite_status")


def test_offsite_status_tells_the_lease_pending_and_newest_and_clears(
    daemons: DaemonRunner, tmp_path: Path, sock_dir: Path
) -> None:
    """Another sidecar holds the prefix: status says read-only, names the holder, counts the
    backup as pending. Once it lets go, the next backup's pass takes the lease: writable, no
    holder, nothing pending, the newest confirmed copy of the policy named with its age; `ctl
    offsite-status --json` prints the same. A daemon without an offsite section says so."""
    user = make_db(tmp_path / "data" / "user_data.db", wal=True, rows=50)
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    url = f"file://{tmp_path / 'offsite'}"
    other = Lease(Store(parse_target(url), retry=fast_retry()), ttl=300)
    assert other.acquire().writable
    config = quiet_config(
        backup_dir=backup_dir,
        databases={"user": user},
        socket_path=sock_dir / "control.sock",
        offsite={"url": url},
    )
    d = daemons.start(config)
    first = d.request("backup")["archive"]
    held = wait_until(
        lambda: (s := _status(d))["pending"] == 1 and s["writable"] is False and s,
        what="the read-only pass counted the backup pending",
    )
    assert held["configured"] is True and held["url"] == url
    assert held["holder"] == other.owner.describe(), held
    assert held["newest"] == {} and held["last_error"] is None

    other.release()
    second = d.request("backup")["archive"]
    done = wait_until(
        lambda: (s := _status(d))["pending"] == 0 and s["writable"] is True and s,
        what="the next pass took the lease and uploaded both",
    )
    assert done["holder"] is None and done["last_error"] is None
    assert set(done["newest"]) == {"manual"}
    newest = done["newest"]["manual"]
    assert newest["object"] in (f"{first}.tar.gz", f"{second}.tar.gz")
    assert 0 <= newest["age_seconds"] < 600
    shown = d.ctl("offsite-status", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["newest"]["manual"]["object"] == newest["object"]
    text = d.ctl("offsite-status")
    assert text.returncode == 0 and "writable: True" in text.stdout, text.stdout

    bare = daemons.start(
        quiet_config(
            backup_dir=tmp_path / "b2",
            databases={"user": make_db(tmp_path / "d2" / "user_data.db", wal=True, rows=5)},
            socket_path=sock_dir / "bare.sock",
        )
    )
    assert _status(bare) == {
        "configured": False,
        "url": None,
        "writable": None,
        "holder": None,
        "pending": None,
        "newest": {},
        "last_error": None,
        "last_error_at": None,
        "checked_at": None,
        "copies": {},
        "lagging": [],
    }


def test_offsite_status_last_error_clears_when_the_endpoint_answers(
    daemons: DaemonRunner,
    tmp_path: Path,
    sock_dir: Path,
    seaweed: SeaweedServer,
    shared_bucket: str,
) -> None:
    """A dead endpoint: `last_error` says why (no secret in it); after a reload to the live
    endpoint the next pass clears it and the backup is confirmed."""
    user = make_db(tmp_path / "data" / "user_data.db", wal=True, rows=20)
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    offsite: dict[str, Any] = {
        "url": f"s3://{shared_bucket}/status-{tmp_path.name}",
        "endpoint": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "path_style": True,
        "attempts": 1,
    }
    config = quiet_config(
        backup_dir=backup_dir,
        databases={"user": user},
        socket_path=sock_dir / "control.sock",
        offsite=offsite,
    )
    d = daemons.start(config, env=seaweed.env())
    d.request("backup")
    failed = wait_until(
        lambda: (s := _status(d))["last_error"] and s, what="the dead endpoint's error"
    )
    assert failed["last_error_at"] is not None
    assert seaweed.env()["AWS_SECRET_ACCESS_KEY"] not in failed["last_error"]

    offsite |= {"endpoint": seaweed.endpoint, "attempts": 5}
    d.rewrite_config({**config, "offsite": offsite})
    mark = len(d.log.find("config_reloaded"))
    d.signal(signal.SIGHUP)
    d.log.wait("config_reloaded", count=mark + 1)
    d.request("backup")
    cleared = wait_until(
        lambda: (s := _status(d))["pending"] == 0 and s["last_error"] is None and s,
        what="a pass without failure after the endpoint came back",
    )
    assert cleared["writable"] is True and cleared["newest"]["manual"]["object"]


@pytest.fixture
def encrypted_daemon(
    daemons: DaemonRunner,
    tmp_path: Path,
    sock_dir: Path,
    seaweed: SeaweedServer,
    shared_bucket: str,
) -> tuple[Daemon, Store]:
    """A daemon uploading age-encrypted copies to SeaweedFS, with the identity to restore."""
    make_db(tmp_path / "data" / "user_data.db", wal=True, rows=120, tag="user")
    make_db(tmp_path / "data" / "arrow_database.db", wal=False, rows=80, tag="arrow")
    (tmp_path / "backups").mkdir()
    identity = x25519.Identity.generate()
    key = tmp_path / "age.key"
    key.write_text(f"{identity}\n")
    key.chmod(0o600)
    prefix = f"restore-{tmp_path.name}"
    config = quiet_config(
        backup_dir=tmp_path / "backups",
        databases={
            "user": tmp_path / "data" / "user_data.db",
            "arrow": tmp_path / "data" / "arrow_database.db",
        },
        socket_path=sock_dir / "control.sock",
        policies={"daily": {"keep": 5}},
        offsite={
            "url": f"s3://{shared_bucket}/{prefix}",
            "endpoint": seaweed.endpoint,
            "path_style": True,
            "encryption": {"recipients": [str(identity.to_public())], "identity_file": str(key)},
        },
    )
    return daemons.start(config, env=seaweed.env()), s3_store(
        seaweed, shared_bucket, prefix, retry=fast_retry()
    )


def test_restore_from_offsite_through_the_socket(
    encrypted_daemon: tuple[Daemon, Store], tmp_path: Path
) -> None:
    """The archive confirmed offsite and gone locally, the live databases changed: `restore`
    with "from": "offsite" and "latest" downloads, decrypts, verifies, saves the live content
    as pre_restore and restores; the databases equal what was backed up; the answer has the
    local restore's fields (one archive gave both) and says which archive gave each. `ctl
    restore NAME --from-offsite --force` does the same by name."""
    d, store = encrypted_daemon
    user = tmp_path / "data" / "user_data.db"
    arrow = tmp_path / "data" / "arrow_database.db"
    before = {"user": dump(user), "arrow": dump(arrow)}
    name = d.request("backup", policy="daily")["archive"]  # (latest: configured policies only)
    wait_until(
        lambda: f"{name}.tar.gz.age" in {o.name for o in store.list().objects if o.confirmed},
        what="the backup confirmed offsite",
    )
    (d.backup_dir / f"{name}.tar.gz").unlink()
    for db in (user, arrow):
        make_db(db.with_name("scratch.db"), wal=False, rows=3, tag="changed").replace(db)

    latest: dict[str, Any] = {"from": "offsite", "latest": True, "confirm": True}
    result = d.request("restore", **latest)
    assert {"archive", "dry_run", "restored", "pre_restore_archive", "damaged", "plan"} <= set(
        result
    )
    assert result["databases"] == {"arrow": name, "user": name}
    assert result["archive"] == name and sorted(result["restored"]) == ["arrow", "user"]
    assert result["pre_restore_archive"]
    assert {"user": dump(user), "arrow": dump(arrow)} == before
    assert integrity(user) == "ok" and integrity(arrow) == "ok"

    (d.backup_dir / f"{name}.tar.gz").unlink()
    again = d.ctl("restore", name, "--from-offsite", "--force", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["archive"] == name


def test_restore_from_offsite_refusals_are_one_line(
    encrypted_daemon: tuple[Daemon, Store], daemons: DaemonRunner, tmp_path: Path, sock_dir: Path
) -> None:
    """An absent name is not_found; "latest" without "from": "offsite" and both a name and
    "latest" are bad_request; a name present locally as a damaged copy is refused (the local
    file kept); a daemon without an offsite section says to add one; `ctl restore --latest`
    without --from-offsite exits 2. The live databases are untouched by every refusal."""
    d, store = encrypted_daemon
    user = tmp_path / "data" / "user_data.db"
    before = dump(user)

    latest: dict[str, Any] = {"from": "offsite", "latest": True, "confirm": True}

    def refused(**fields: Any) -> ControlError:
        with pytest.raises(ControlError) as caught:
            d.request("restore", confirm=True, **fields)
        assert "\n" not in caught.value.message
        return caught.value

    assert refused(archive="manual_20000101_000000", **{"from": "offsite"}).code == "not_found"
    assert refused(latest=True).code == "bad_request"
    both = refused(archive="x", latest=True, **{"from": "offsite"})
    assert both.code == "bad_request" and "not both" in both.message
    local = d.request("backup")["archive"]
    wait_until(
        lambda: f"{local}.tar.gz.age" in {o.name for o in store.list().objects if o.confirmed},
        what="the backup confirmed offsite",
    )
    flip_database_byte(d.backup_dir / f"{local}.tar.gz")  # the local copy rots
    exists = refused(archive=local, **{"from": "offsite"})
    assert f"{local}.tar.gz' already exists" in exists.message
    assert "is damaged" in exists.message
    bare = daemons.start(
        quiet_config(
            backup_dir=tmp_path / "b2",
            databases={"user": make_db(tmp_path / "d2" / "user_data.db", wal=True, rows=5)},
            socket_path=sock_dir / "bare.sock",
        )
    )
    with pytest.raises(ControlError) as caught:
        bare.request("restore", **latest)
    assert caught.value.code == "bad_request" and "offsite" in caught.value.message
    cli = d.ctl("restore", "--latest", "--force")
    assert cli.returncode == 2 and "--latest needs --from-offsite" in one_error_line(cli)
    assert dump(user) == before


@pytest.mark.slow
def test_a_planted_lease_is_shown_then_expires_and_uploads_resume(
    daemons: DaemonRunner, tmp_path: Path, sock_dir: Path
) -> None:
    """Outside attack 4 through a real daemon: garbage at the largest 20-digit lease name (out
    of bounds: ignored) and at the highest counted one (an unreadable lease): offsite_status
    is read-only naming the planted object, never "nobody"; once its TTL has passed on the
    store's clock the daemon takes the lease and uploads the pending backup."""
    user = make_db(tmp_path / "data" / "user_data.db", wal=True, rows=50)
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    lease_dir = tmp_path / "offsite" / ".offsite" / "lease"
    lease_dir.mkdir(parents=True)
    (lease_dir / ("9" * 20)).write_bytes(b"\xff planted")
    (lease_dir / f"{10**18 - 1:020d}").write_bytes(b"\xff planted")
    config = quiet_config(
        backup_dir=backup_dir,
        databases={"user": user},
        socket_path=sock_dir / "control.sock",
        # Long enough for the daemon's start and first pass to come before the planted lease
        # expires (3 s was not, 3 runs in 7 on a loaded machine: the start's pass took it).
        offsite={"url": f"file://{tmp_path / 'offsite'}", "lease_ttl": "10s"},
    )
    d = daemons.start(config)
    d.request("backup")
    held = wait_until(
        lambda: (s := _status(d))["writable"] is False and s["holder"] and s,
        what="the read-only pass naming the planted lease",
        timeout=60,
    )
    assert f"{10**18 - 1:020d}" in held["holder"] and "unreadable" in held["holder"], held
    assert "nobody" not in held["holder"]
    # A read-only pass is no failure: the uploader's next pass of its own is a minute away.
    # Once the planted lease's TTL (10 s, plus the lease's 1 s slack) has passed on the store's
    # clock (this directory's mtimes), a backup wakes a pass at once.
    free_at = (lease_dir / f"{10**18 - 1:020d}").stat().st_mtime + 10 + 1 + 0.5
    wait_until(lambda: time.time() > free_at, what="the planted lease's TTL to pass")
    d.request("backup")
    wait_until(
        lambda: (s := _status(d))["writable"] is True and s["pending"] == 0,
        what="the lease taken after the planted one's TTL and the backup uploaded",
        timeout=120,
    )
    assert not (lease_dir / ("9" * 20)).exists()
