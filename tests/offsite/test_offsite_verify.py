"""The offsite verify (jobs/offsite_verify.py) against the real stores (SeaweedFS and file://):
real archives of real SQLite databases, uploaded age-encrypted, downloaded into a temporary
directory (never the backup directory), decrypted and fully verified; truncated, tampered,
swapped and internally damaged copies are refused with one error naming the object; without
the identity the verify says `skipped`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import obstore
import pytest
from pyrage import x25519

from backup_sidecar import jobs
from backup_sidecar.archiver import DatabaseSpec
from backup_sidecar.jobs.offsite_prune import origin_of
from backup_sidecar.jobs.offsite_verify import newest_per_policy, verify_offsite
from backup_sidecar.jobs.runtime import OffsiteSpec, Runtime
from backup_sidecar.offsite import Lease, Record, Store, parse_recipients
from support.databases import make_db


@dataclass
class Site:
    rt: Runtime
    store: Store
    lease: Lease
    identity_file: Path
    recipients: list[str]
    temp: Path

    def backup(self, policy: str) -> str:
        """A real backup, uploaded encrypted with its origin; the object's name."""
        made = jobs.run_backup(self.rt, policy=policy)
        info = next(a for a in jobs.listing(self.rt, None) if a.name == made.name)
        up = self.store.upload(
            info.path,
            lease=self.lease,
            recipients=parse_recipients(self.recipients),
            origin=origin_of(info),
        )
        return up.name

    def spec(self, *, identity: bool = True) -> OffsiteSpec:
        return OffsiteSpec(
            url=self.store.url,
            recipients=tuple(self.recipients),
            identity_file=self.identity_file if identity else None,
        )

    def verify(self, *, identity: bool = True) -> dict[str, tuple[str, str | None, str | None]]:
        done = verify_offsite(
            self.spec(identity=identity), environ={}, store=self.store, temp_root=self.temp
        )
        return {d.policy: (d.result, d.reason, d.error) for d in done}


@pytest.fixture
def site(
    store: Store, lease: Lease, tmp_path: Path, age_identity: tuple[x25519.Identity, Path]
) -> Site:
    identity, key_file = age_identity
    user = make_db(tmp_path / "data" / "user_data.db", wal=True, rows=200)
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    rt = Runtime(
        backup_dir=backup_dir,
        databases={"user": DatabaseSpec(name="user", path=user)},
        keep={"daily": 5, "hourly": 5},
    )
    temp = tmp_path / "tmp"
    temp.mkdir()
    return Site(rt, store, lease, key_file, [str(identity.to_public())], temp)


def test_the_newest_copy_of_each_policy_is_downloaded_decrypted_and_verified(
    site: Site,
) -> None:
    """Two policies: the newest copy of each is verified (ok), the older one of `daily` is
    not the one chosen; nothing is left in the temporary directory, and the backup directory
    holds only the archives the backups made."""
    site.backup("daily")
    newest_daily = site.backup("daily")
    site.backup("hourly")
    before = sorted(p.name for p in site.rt.backup_dir.iterdir())
    chosen = newest_per_policy(site.store.list().objects)
    assert chosen["daily"].name == newest_daily
    assert site.verify() == {"daily": ("ok", None, None), "hourly": ("ok", None, None)}
    assert list(site.temp.iterdir()) == []
    assert sorted(p.name for p in site.rt.backup_dir.iterdir()) == before


def test_without_the_identity_the_verify_is_skipped_and_says_why(site: Site) -> None:
    """An encrypted copy and no `offsite.encryption.identity_file`: `skipped`, with the reason
    naming the missing key, never `ok`."""
    site.backup("daily")
    result, reason, error = site.verify(identity=False)["daily"]
    assert (result, reason) == ("skipped", None)
    assert error is not None and "identity_file" in error


def test_a_wrong_identity_is_a_decrypt_failure(site: Site, tmp_path: Path) -> None:
    """The identity file holds another key: `failed`, reason `decrypt`, naming the object."""
    name = site.backup("daily")
    site.identity_file.write_text(f"{x25519.Identity.generate()}\n")
    result, reason, error = site.verify()["daily"]
    assert (result, reason) == ("failed", "decrypt")
    assert error is not None and name in error


def _truncate(site: Site, name: str, _other: str) -> None:
    data = bytes(obstore.get(site.store.objects.backend, site.store.key(name)).bytes())
    obstore.put(site.store.objects.backend, site.store.key(name), data[: len(data) // 2])


def _tamper(site: Site, name: str, _other: str) -> None:
    data = bytearray(obstore.get(site.store.objects.backend, site.store.key(name)).bytes())
    data[len(data) // 2] ^= 0xFF
    obstore.put(site.store.objects.backend, site.store.key(name), bytes(data))


def _swap_with_record(site: Site, name: str, other: str) -> None:
    """The older copy's bytes and record put in place of the newest (consistent checksums:
    only the origin the record carries against the archive's metadata can tell)."""
    backend = site.store.objects.backend
    data = bytes(obstore.get(backend, site.store.key(other)).bytes())
    etag = obstore.put(backend, site.store.key(name), data)["e_tag"]
    old = site.store.read_record(other)
    new = site.store.read_record(name)
    assert old is not None and new is not None
    forged = Record(
        name=name,
        size=old.size,
        sha256=old.sha256,
        etag=etag,
        encrypted=True,
        source_size=old.source_size,
        origin=new.origin,
    )
    obstore.put(backend, site.store.record_key(name), forged.to_json())


@pytest.mark.parametrize(
    ("damage", "reason"),
    [(_truncate, "corrupt"), (_tamper, "corrupt"), (_swap_with_record, "damaged")],
    ids=["truncated", "tampered", "swapped"],
)
def test_a_damaged_copy_is_refused_naming_it(site: Site, damage: object, reason: str) -> None:
    """The newest copy truncated, tampered (one byte flipped) or swapped for an older one
    with a record forged to match: `failed` with a bounded reason and an error naming the
    object (the newest copy, never an older good one in its place); the temporary directory
    is left empty."""
    other = site.backup("daily")
    name = site.backup("daily")
    assert callable(damage)
    damage(site, name, other)
    result, got, error = site.verify()["daily"]
    assert (result, got) == ("failed", reason)
    assert error is not None and name.removesuffix(".tar.gz.age") in error
    assert list(site.temp.iterdir()) == []
    # What the bucket shows damaged needs no key to be reported.
    assert site.verify(identity=False)["daily"][:2] == (
        ("failed", "corrupt") if reason == "corrupt" else ("skipped", None)
    )


def test_an_archive_damaged_before_upload_fails_the_full_verify(site: Site) -> None:
    """A copy whose stored bytes match its record but whose archive is damaged inside (a byte
    flipped in the local file before it was uploaded): the archiver's verify refuses it
    (`damaged`), which a checksum check alone would pass."""
    made = jobs.run_backup(site.rt, policy="daily")
    info = next(a for a in jobs.listing(site.rt, None) if a.name == made.name)
    raw = bytearray(info.path.read_bytes())
    raw[len(raw) - 40] ^= 0xFF
    bad = site.temp.parent / f"{made.name}.tar.gz"
    bad.write_bytes(bytes(raw))
    site.store.upload(
        bad, lease=site.lease, recipients=parse_recipients(site.recipients), origin=origin_of(info)
    )
    result, reason, error = site.verify()["daily"]
    assert (result, reason) == ("failed", "damaged")
    assert error is not None and made.name in error
