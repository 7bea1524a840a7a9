"""Which offsite copies `restore --latest --from-offsite`, `init --restore-from-offsite` and
`verify --offsite --latest` trust, through the real CLI against a file:// store (the same code
path as S3): only copies of the configured policies, never one whose record's origin disagrees
with the archive's metadata, no empty databases in place of copies that exist but are
unusable, and a non-zero exit when a database was not restored (which copy is newest:
test_latest_by_origin.py). Archives are made by the real `backup` and uploaded by the
offsite library with the origin the daemon's uploader gives them."""

from __future__ import annotations

import json
from pathlib import Path

from pyrage import x25519

from backup_sidecar import archiver
from backup_sidecar.offsite import parse_recipients
from support.databases import dump
from support.offsitehost import Host, events, insert, upload


def test_latest_and_init_take_only_copies_of_configured_policies(tmp_path: Path) -> None:
    """Two sidecars share a prefix under their own policies: host A `daily`, host B `zzz`
    (its user database holding EVIL), B's copy uploaded last. A's `restore --latest
    --from-offsite` and `init --restore-from-offsite` restore A's own copy, never B's; B's copy
    is still restored when named explicitly (the operator chose it)."""
    url = f"file://{tmp_path / 'offsite'}"
    a = Host(tmp_path / "a", url, {"daily": {"keep": 5}}).make("a")
    b = Host(tmp_path / "b", url, {"zzz": {"keep": 5}}).make("b")
    insert(b.user, "EVIL")
    ours = upload(url, a.backup("daily", "daily_20261207_010000"))
    upload(url, b.backup("zzz", "zzz_20261207_170000"))
    expected = a.state()
    a.wipe()

    latest = a.cli("restore", "--latest", "--from-offsite", "--force", "--json")
    assert latest.returncode == 0, latest.stderr
    assert json.loads(latest.stdout)["databases"] == {
        "arrow": "daily_20261207_010000",
        "user": "daily_20261207_010000",
    }
    assert a.state() == expected

    a.wipe()
    init = a.cli("init", "--restore-from-offsite")
    assert init.returncode == 0, init.stderr
    restored = {e["database"]: e["archive"] for e in events(init, "offsite_restored")}
    assert restored == {"user": "daily_20261207_010000", "arrow": "daily_20261207_010000"}
    assert a.state() == expected
    assert ours == "daily_20261207_010000.tar.gz"

    named = a.cli("restore", "zzz_20261207_170000", "--from-offsite", "--force")
    assert named.returncode == 0, named.stderr
    assert any("EVIL" in row for row in dump(a.user))


def test_a_copy_whose_record_disagrees_with_its_metadata_is_passed_over(tmp_path: Path) -> None:
    """A copy encrypted to the (public) recipient with a hand-made record claiming sequence 999
    where its metadata says 1, uploaded last: `restore --latest --from-offsite` passes it over
    like a damaged copy (saying why: the origin mismatch) and restores the genuine one; nothing
    of the forged copy enters the backup directory."""
    identity = x25519.Identity.generate()
    key = tmp_path / "age.key"
    key.write_text(f"{identity}\n")
    key.chmod(0o600)
    recipients = tuple(parse_recipients([str(identity.to_public())]))
    url = f"file://{tmp_path / 'offsite'}"
    encryption = {"recipients": [str(identity.to_public())], "identity_file": str(key)}
    host = Host(tmp_path / "a", url, {"daily": {"keep": 5}}, {"encryption": encryption})
    host.make("a")
    forger = Host(tmp_path / "forger", url, {"daily": {"keep": 5}}).make("forger")
    insert(forger.user, "EVIL")
    upload(url, host.backup("daily", "daily_20261207_010000"), recipients=recipients)
    forged = forger.backup("daily", "daily_20261207_170000")
    assert archiver.read_manifest(forged).sequence == 1
    planted = upload(url, forged, recipients=recipients, sequence=999)
    expected = host.state()
    host.wipe()

    result = host.cli("restore", "--latest", "--from-offsite", "--force", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["archive"] == "daily_20261207_010000"
    [skipped] = payload["skipped"]
    assert skipped["object"] == planted
    assert "its checksum record 'daily' 999" in skipped["reason"]
    assert host.state() == expected
    assert not (host.backups / "daily_20261207_170000.tar.gz").exists()


def test_another_backups_archive_under_a_newer_name_is_refused_offsite(tmp_path: Path) -> None:
    """`cat older > newer` before an upload that sent it as `newer` with the origin its
    metadata gives (what the uploader did before it refused copies; outside attack, issue 15):
    `restore newer --from-offsite` refuses it naming the backup its metadata holds, the live
    databases untouched; `verify --offsite newer` fails; `restore --latest --from-offsite`
    passes over it (the newest upload) and restores the genuine older copy."""
    url = f"file://{tmp_path / 'offsite'}"
    host = Host(tmp_path / "a", url, {"daily": {"keep": 5}}).make("a")
    older = host.backup("daily", "daily_20261207_010000")
    at_older = host.state()
    insert(host.user, "NEWER")
    newer = host.backup("daily", "daily_20261207_020000")
    upload(url, older)
    newer.write_bytes(older.read_bytes())
    swapped = upload(url, newer)
    newer.unlink()
    live = host.state()

    named = host.cli("restore", "daily_20261207_020000", "--from-offsite", "--force")
    assert named.returncode == 1
    assert "metadata names backup 'daily_20261207_010000'" in named.stderr
    assert host.state() == live
    assert not newer.exists()
    verify = host.cli("verify", "--offsite", "daily_20261207_020000", "--json")
    assert verify.returncode != 0
    [copy] = json.loads(verify.stdout)["copies"]
    assert (copy["object"], copy["result"]) == (swapped, "failed")

    host.wipe()
    latest = host.cli("restore", "--latest", "--from-offsite", "--force", "--json")
    assert latest.returncode == 0, latest.stderr
    payload = json.loads(latest.stdout)
    assert payload["archive"] == "daily_20261207_010000"
    assert [s["object"] for s in payload["skipped"]] == [swapped]
    assert host.state() == at_older


def test_init_refuses_to_create_empty_databases_when_no_copy_is_usable(tmp_path: Path) -> None:
    """The store holds a `daily` copy but every checksum record is garbage (nothing confirmed):
    `init --restore-from-offsite` exits 1 with one line saying why and creates neither
    database. On an empty store (a first deploy) it still exits 0 with empty databases."""
    url = f"file://{tmp_path / 'offsite'}"
    host = Host(tmp_path / "a", url, {"daily": {"keep": 5}}).make("a")
    upload(url, host.backup("daily", "daily_20261207_010000"))
    sums = list((tmp_path / "offsite" / ".offsite" / "sums").glob("*.json"))
    assert sums
    for record in sums:
        record.write_text("garbage")
    host.wipe()

    result = host.cli("init", "--restore-from-offsite")
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "no usable confirmed copy holds" in last and "nothing was created" in last
    assert not host.user.exists() and not host.arrow.exists()

    (tmp_path / "empty").mkdir()
    fresh = Host(tmp_path / "fresh", f"file://{tmp_path / 'empty'}", {"daily": {"keep": 5}})
    first = fresh.cli("init", "--restore-from-offsite")
    assert first.returncode == 0, first.stderr
    assert fresh.user.exists() and fresh.arrow.exists()


def test_restore_latest_exits_3_when_a_configured_database_was_not_restored(
    tmp_path: Path,
) -> None:
    """Only `hourly: {databases: [user]}` copies exist: `restore --latest --from-offsite`
    restores user, then exits 3 with one line naming arrow (not restored)."""
    url = f"file://{tmp_path / 'offsite'}"
    policies = {"hourly": {"keep": 5, "databases": ["user"]}, "daily": {"keep": 5}}
    host = Host(tmp_path / "a", url, policies).make("a")
    upload(url, host.backup("hourly", "hourly_20261207_010000"))
    expected = dump(host.user)
    host.wipe()

    result = host.cli("restore", "--latest", "--from-offsite", "--force")
    assert result.returncode == 3, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "holds arrow: not restored" in last
    assert dump(host.user) == expected
    assert "restored user from hourly_20261207_010000" in result.stdout


def test_a_copy_of_another_database_set_is_not_taken_by_latest_or_init(tmp_path: Path) -> None:
    """The only `daily` copy was made with `--db user` (its record's origin names user only;
    as another sidecar backing up user alone under `daily` would, or this one before `arrow`
    joined the configuration): not this sidecar's by the rule offsite retention applies
    (exactly the policy's database set), so `restore --latest --from-offsite` and `init
    --restore-from-offsite` never take it; init exits 1 naming user and creates nothing (a
    copy holds it: never created empty in silence); `restore NAME --from-offsite` restores it."""
    url = f"file://{tmp_path / 'offsite'}"
    host = Host(tmp_path / "a", url, {"daily": {"keep": 5}}).make("a")
    made = host.cli(
        "backup", "--policy", "daily", "--db", "user", "--name", "daily_20261207_010000"
    )
    assert made.returncode == 0, made.stderr
    upload(url, host.backups / "daily_20261207_010000.tar.gz")
    expected = dump(host.user)
    host.wipe()

    result = host.cli("init", "--restore-from-offsite")
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "for user, but no usable confirmed copy holds them" in last
    assert not host.user.exists() and not host.arrow.exists()
    latest = host.cli("restore", "--latest", "--from-offsite", "--dry-run", "--json")
    assert latest.returncode != 0
    assert "daily_20261207_010000" not in latest.stdout

    named = host.cli("restore", "daily_20261207_010000", "--from-offsite", "--force")
    assert named.returncode == 0, named.stderr
    assert dump(host.user) == expected
