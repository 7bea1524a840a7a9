"""`restore --latest --from-offsite` when two copies without an origin in their records (as
`Store.upload` without ``origin=`` writes them, or records from before origins) carry the same
upload time (S3 dates objects to the second): the archive made later wins, by its unique name
suffix. Copies with an origin are ordered by it first (tests/offsite/test_latest_by_origin.py);
the upload time only breaks their ties and orders copies like these.

The tie is injected at the store's boundary: a sitecustomize shim in the CLI process dates
every listed object to the oldest one's time, as a store with one-second dates would."""

from __future__ import annotations

import json
from pathlib import Path

from backup_sidecar.offsite import Lease, Store, parse_target
from support.cli import cli_env, run_cli, sitecustomize
from support.databases import make_db
from support.offsite import fast_retry

#: The shim: every object of a listing dated like the oldest one.
SAME_SECOND = """
import dataclasses
from backup_sidecar.offsite import store as _store

_list = _store.Store.list

def _tied(self, *args, **kwargs):
    got = _list(self, *args, **kwargs)
    when = min(o.modified for o in got.objects)
    tied = tuple(dataclasses.replace(o, modified=when) for o in got.objects)
    return dataclasses.replace(got, objects=tied)

_store.Store.list = _tied
"""


def test_latest_breaks_a_same_second_tie_by_the_unique_suffix(tmp_path: Path) -> None:
    """Two backups in one second are NAME and NAME-2; uploaded and dated the same second,
    `--latest` restores NAME-2, the newer (it took NAME: as object names `NAME.tar.gz` sorts
    after `NAME-2.tar.gz`)."""
    user = make_db(tmp_path / "data" / "user_data.db", wal=True, rows=30, tag="user")
    make_db(tmp_path / "data" / "arrow_database.db", wal=False, rows=10, tag="arrow")
    backups = tmp_path / "backups"
    backups.mkdir()
    env = cli_env(backups, user=user)
    url = f"file://{tmp_path / 'offsite'}"
    config = tmp_path / "sidecar.yaml"
    config.write_text(json.dumps({"offsite": {"url": url}}))
    store = Store(parse_target(url), retry=fast_retry())
    lease = Lease(store, ttl=300)
    assert lease.acquire().writable
    for name in ("daily_20261207_010203", "daily_20261207_010203-2"):
        made = run_cli("backup", "--policy", "daily", "--name", name, config=config, env=env)
        assert made.returncode == 0, made.stderr
        store.upload(backups / f"{name}.tar.gz", lease=lease)
        (backups / f"{name}.tar.gz").unlink()
    lease.release()
    assert len([o for o in store.list().objects if o.confirmed]) == 2
    env |= sitecustomize(tmp_path, SAME_SECOND)

    result = run_cli("restore", "--latest", "--from-offsite", "--force", "--json",
                     config=config, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["archive"] == "daily_20261207_010203-2"
