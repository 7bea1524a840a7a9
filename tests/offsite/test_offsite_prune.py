"""Offsite retention (jobs/offsite_prune.py) against the real stores (SeaweedFS and file://):
copies grouped and ordered by the origin their records carry, the newest never deleted,
nothing pruned that this sidecar cannot prove is its own, unfinished uploads only after a day
on the store's clock, and only by the lease holder."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import obstore
import pytest
from pyrage import x25519

from backup_sidecar import archiver
from backup_sidecar.errors import OffsiteLeaseHeldError
from backup_sidecar.jobs.offsite_prune import prune_offsite, upload_candidates
from backup_sidecar.offsite import Lease, Origin, Store, parse_recipients, parse_target
from support.offsite import archive_file, fast_retry
from support.waiting import wait_until

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _put(
    store: Store,
    lease: Lease,
    tmp_path: Path,
    name: str,
    origin: Origin | None,
) -> str:
    """Upload a small file as ``name.tar.gz`` carrying ``origin`` in its record."""
    path = archive_file(tmp_path, f"{name}.tar.gz", 2048, seed=len(name))
    return store.upload(path, lease=lease, origin=origin).name


def _origin(
    policy: str, sequence: int | None, hours: int, dbs: tuple[str, ...] = ("user",)
) -> Origin:
    return Origin(policy, sequence, T0 + timedelta(hours=hours), dbs)


def _names(store: Store) -> set[str]:
    return {o.name for o in store.list().objects}


def test_keeps_the_newest_by_sequence_not_by_clock_or_upload_order(
    store: Store, lease: Lease, tmp_path: Path
) -> None:
    """Four copies of `daily`, keep 2: the two with the highest creation sequence stay, though
    their metadata times are the oldest (a stepped clock), and a lower one uploaded after them
    goes."""
    _put(store, lease, tmp_path, "d2", _origin("daily", 2, hours=30))
    _put(store, lease, tmp_path, "d4", _origin("daily", 4, hours=1))
    _put(store, lease, tmp_path, "d1", _origin("daily", 1, hours=40))  # uploaded after d4
    _put(store, lease, tmp_path, "d3", _origin("daily", 3, hours=2))
    result = prune_offsite(store, lease=lease, keep={"daily": 2}, databases=["user"])
    assert sorted(e.object for e in result.deleted) == ["d1.tar.gz", "d2.tar.gz"]
    assert result.failed == []
    assert _names(store) == {"d3.tar.gz", "d4.tar.gz"}


def test_the_newest_upload_is_kept_even_when_its_sequence_is_low(
    store: Store, lease: Lease, tmp_path: Path
) -> None:
    """A host rebuilt from offsite starts its sequence again: its first copy (sequence 1,
    uploaded last) is below the old ones, yet never deleted: the newest copy by the store's
    upload time is kept besides the keep newest by sequence (keep 0 still keeps one)."""
    _put(store, lease, tmp_path, "old7", _origin("daily", 7, hours=1))
    _put(store, lease, tmp_path, "old8", _origin("daily", 8, hours=2))
    last = max(o.modified for o in store.list().objects)
    # S3 dates objects to the second: the rebuilt host's copy lands in a later one.
    wait_until(lambda: lease.store_now() > last, what="the store's clock past the old uploads")
    _put(store, lease, tmp_path, "new1", _origin("daily", 1, hours=90))
    prune_offsite(store, lease=lease, keep={"daily": 0}, databases=["user"])
    assert _names(store) == {"old8.tar.gz", "new1.tar.gz"}


def test_nothing_is_pruned_that_is_not_provably_ours(
    store: Store, lease: Lease, tmp_path: Path
) -> None:
    """Copies without an origin (records written before it), of a policy this sidecar does
    not configure, or holding a database it does not back up, all stay; so does a damaged
    copy (object changed under its record). Groups are per database set: a `daily` copy of
    (user, events) does not push out the newest of (user)."""
    for i in range(3):
        _put(store, lease, tmp_path, f"legacy{i}", None)
        _put(store, lease, tmp_path, f"other{i}", _origin("site_b", i + 1, hours=i))
        _put(store, lease, tmp_path, f"theirs{i}", _origin("daily", i + 1, hours=i, dbs=("app",)))
    _put(store, lease, tmp_path, "mine1", _origin("daily", 10, hours=10))
    _put(store, lease, tmp_path, "both", _origin("daily", 11, hours=11, dbs=("events", "user")))
    damaged = _put(store, lease, tmp_path, "rotten", _origin("daily", 1, hours=0))
    obstore.put(store.objects.backend, store.key(damaged), b"not the bytes recorded")
    before = _names(store)
    result = prune_offsite(
        store, lease=lease, keep={"daily": 1, "pre_restore": 1}, databases=["user", "events"]
    )
    assert result.deleted == []
    assert _names(store) == before


def test_unfinished_uploads_go_only_after_a_day_on_the_stores_clock(
    store: Store, lease: Lease, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An object without a checksum record (an upload a former holder may still be running)
    stays while young; once the store's clock says it is over a day old (the store's clock
    moved on: injected, a server's clock cannot be set), it is deleted, counted `unconfirmed`."""
    obstore.put(store.objects.backend, store.key("half.tar.gz"), b"partial")
    assert prune_offsite(store, lease=lease, keep={}, databases=["user"]).deleted == []
    assert "half.tar.gz" in _names(store)
    real = lease.store_now
    monkeypatch.setattr(lease, "store_now", lambda: real() + timedelta(hours=25))
    result = prune_offsite(store, lease=lease, keep={}, databases=["user"])
    assert [(e.object, e.policy) for e in result.deleted] == [("half.tar.gz", "unconfirmed")]
    assert "half.tar.gz" not in _names(store)


def test_a_read_only_sidecar_never_prunes(
    store: Store, lease: Lease, make_store: Callable[..., Store], tmp_path: Path
) -> None:
    """A second sidecar on the prefix (the lease held by the first) is refused naming the
    holder, and nothing is deleted; its dry run says what the holder would delete."""
    for i in range(3):
        _put(store, lease, tmp_path, f"d{i}", _origin("daily", i + 1, hours=i))
    other = make_store()
    second = Lease(other, ttl=300)
    assert not second.acquire().writable
    with pytest.raises(OffsiteLeaseHeldError):
        prune_offsite(other, lease=second, keep={"daily": 1}, databases=["user"])
    assert len(_names(store)) == 3
    dry = prune_offsite(other, lease=second, keep={"daily": 1}, databases=["user"], dry_run=True)
    assert sorted(e.object for e in dry.deleted) == ["d0.tar.gz", "d1.tar.gz"]
    assert len(_names(store)) == 3


def test_only_archives_inside_the_offsite_keep_are_upload_candidates(tmp_path: Path) -> None:
    """The uploader offers only the keep newest archives per policy and database set (at
    least one): an older one would be pruned and then, missing, uploaded again every pass.
    A policy without an offsite keep uploads everything."""

    def info(
        name: str, policy: str, seq: int, dbs: tuple[str, ...] = ("user",)
    ) -> archiver.ArchiveInfo:
        return archiver.ArchiveInfo(
            name=name,
            path=tmp_path / f"{name}.tar.gz",
            size_bytes=1,
            created_at=T0 - timedelta(hours=seq),  # clock running backwards: sequence decides
            status=archiver.ArchiveStatus.VERIFIED,
            policy=policy,
            databases=dbs,
            sequence=seq,
        )

    local = [
        info("a3", "daily", 3),
        info("a2", "daily", 2),
        info("a1", "daily", 1),
        info("x1", "daily", 4, dbs=("app",)),
        info("m2", "manual", 6),
        info("m1", "manual", 5),
        info("h1", "hourly", 7),
    ]
    chosen = upload_candidates(local, {"daily": 2, "hourly": 0})
    assert [a.name for a in chosen] == ["a3", "a2", "x1", "m2", "m1", "h1"]


def test_planted_plaintext_copies_never_push_out_encrypted_ones(
    store: Store, lease: Lease, tmp_path: Path, age_identity: tuple[x25519.Identity, Path]
) -> None:
    """The config encrypts: plaintext copies someone else wrote under the prefix, with records
    claiming `daily` and higher sequences, are not confirmed, so they neither count toward the
    keep nor go; the real encrypted copies are pruned among themselves (the newest stays)."""
    recipients = parse_recipients([str(age_identity[0].to_public())])
    for i in (1, 2):
        path = archive_file(tmp_path, f"d{i}.tar.gz", 2048, seed=i)
        store.upload(path, lease=lease, recipients=recipients, origin=_origin("daily", i, hours=i))
    for i in (100, 101):
        _put(store, lease, tmp_path, f"planted{i}", _origin("daily", i, hours=i))
    result = prune_offsite(
        store, lease=lease, keep={"daily": 1}, databases=["user"], encrypted_only=True
    )
    assert [e.object for e in result.deleted] == ["d1.tar.gz.age"]
    assert _names(store) == {"d2.tar.gz.age", "planted100.tar.gz", "planted101.tar.gz"}


def test_copies_of_another_database_set_are_never_pruned(
    store: Store, lease: Lease, tmp_path: Path
) -> None:
    """Y (`daily`, [user], keep 10) left 5 copies; X (`daily`, [arrow, user], keep 2) prunes
    only copies whose origin database set is exactly its own: Y's five all stay, a subset of
    X's set being no proof they are X's."""
    for i in range(5):
        _put(store, lease, tmp_path, f"y{i}", _origin("daily", i + 1, hours=i))
    for i in range(3):
        xdbs = ("arrow", "user")
        _put(store, lease, tmp_path, f"x{i}", _origin("daily", i + 1, hours=i, dbs=xdbs))
    result = prune_offsite(store, lease=lease, keep={"daily": 2}, databases=["arrow", "user"])
    assert [e.object for e in result.deleted] == ["x0.tar.gz"]
    assert {f"y{i}.tar.gz" for i in range(5)} <= _names(store)


def test_a_policy_with_its_own_databases_prunes_copies_of_that_set(
    store: Store, lease: Lease, tmp_path: Path
) -> None:
    """`hourly: {databases: [user]}` on a sidecar of [arrow, user]: its [user] copies are its
    own set and are pruned to keep; a `daily` copy of [user] alone (not daily's set) stays."""
    for i in range(3):
        _put(store, lease, tmp_path, f"h{i}", _origin("hourly", i + 1, hours=i))
    _put(store, lease, tmp_path, "dsub", _origin("daily", 1, hours=0))
    for i in range(2):
        _put(
            store, lease, tmp_path, f"d{i}", _origin("daily", i + 2, hours=i, dbs=("arrow", "user"))
        )
    result = prune_offsite(
        store,
        lease=lease,
        keep={"hourly": 1, "daily": 1},
        databases=["arrow", "user"],
        policy_databases={"hourly": ("user",)},
    )
    assert sorted(e.object for e in result.deleted) == ["d0.tar.gz", "h0.tar.gz", "h1.tar.gz"]
    assert "dsub.tar.gz" in _names(store)


@pytest.mark.parametrize("kind", ["fifo", "link", "directory"])
def test_a_record_that_is_not_a_file_keeps_its_object(tmp_path: Path, kind: str) -> None:
    """file:// store: a record planted as a FIFO, a link to /dev/zero or a directory, its
    object two days old on the store's clock: the object is no unfinished upload (its record
    exists), so prune (dry run and real) keeps it, and the listing says one consistent thing:
    unconfirmed naming the record, and a link or FIFO record a problem of its own."""
    store = Store(parse_target(f"file://{tmp_path / 'offsite'}"), retry=fast_retry())
    held = Lease(store, ttl=300)
    assert held.acquire().writable
    name = _put(store, held, tmp_path, "d1", _origin("daily", 1, hours=0))
    record = tmp_path / "offsite" / ".offsite" / "sums" / f"{name}.json"
    record.unlink()
    if kind == "fifo":
        os.mkfifo(record)
    elif kind == "link":
        record.symlink_to("/dev/zero")
    else:
        record.mkdir()
        (record / "x").write_bytes(b"{}")
    old = (datetime.now(UTC) - timedelta(days=2)).timestamp()
    os.utime(tmp_path / "offsite" / name, (old, old))
    for dry_run in (True, False):
        result = prune_offsite(
            store, lease=held, keep={"daily": 1}, databases=["user"], dry_run=dry_run
        )
        assert result.deleted == []
    assert (tmp_path / "offsite" / name).exists()
    listing = store.list()
    [obj] = listing.objects
    assert not obj.confirmed
    assert not obj.reason.startswith("no checksum record")
    assert f"{name}.json" in obj.reason
    if kind != "directory":  # a directory is walked: its object's reason names it
        assert any(f"{name}.json" in p.key for p in listing.problems)
