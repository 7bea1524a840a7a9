"""One writer per prefix: the lease against a real SeaweedFS and a file:// directory."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import obstore
import pytest

from backup_sidecar.errors import (
    OffsiteLeaseHeldError,
    OffsiteLeaseLostError,
    OffsiteRequestError,
)
from backup_sidecar.offsite import Lease, LeaseOwner, LeaseVerdict, Store, parse_target, transfer
from backup_sidecar.offsite import store as store_module
from backup_sidecar.offsite.lease import GENERATION_BOUND
from backup_sidecar.offsite.record import LEASE_DIR, join
from support.offsite import archive_file, sidecar
from support.seaweed import SeaweedServer
from support.waiting import wait_until

A = LeaseOwner("host-a", 101, "aaaaaaaaaaaaaaaa")
B = LeaseOwner("host-b", 202, "bbbbbbbbbbbbbbbb")
NAME = "app-daily-20261207T080000Z.tar.gz"


def poll(condition: Callable[[], LeaseVerdict], *, timeout: float) -> LeaseVerdict:
    """Ask until the verdict is writable or the deadline passes (the last verdict)."""
    deadline = time.monotonic() + timeout
    while True:
        verdict = condition()
        if verdict.writable or time.monotonic() > deadline:
            return verdict
        time.sleep(0.2)


def test_second_sidecar_is_read_only_naming_the_holder(
    make_store: Callable[..., Store],
) -> None:
    """A holds the prefix; B's verdict is read-only and names A's host, pid and id; B's
    require_writable raises the same; A is writable and renews."""
    a = Lease(make_store(), ttl=300, owner=A)
    b = Lease(make_store(), ttl=300, owner=B)
    assert a.acquire().writable
    verdict = b.acquire()
    assert not verdict.writable and verdict.holder == A
    assert "host-a pid 101 (lease id aaaaaaaaaaaaaaaa)" in verdict.message
    assert "read-only" in verdict.message and 250 < verdict.expires_in <= 301
    with pytest.raises(OffsiteLeaseHeldError, match="held by host-a pid 101"):
        b.require_writable()
    renewed = a.renew()
    assert renewed.writable and renewed.generation == 2
    a.require_writable()
    assert not b.acquire().writable


def test_release_frees_the_prefix_at_once(make_store: Callable[..., Store]) -> None:
    """After A releases, B takes the lease immediately; A is then read-only."""
    a = Lease(make_store(), ttl=300, owner=A)
    b = Lease(make_store(), ttl=300, owner=B)
    assert a.acquire().writable
    a.release()
    assert a.valid_for == 0
    assert b.acquire().writable
    assert a.acquire().holder == B


def test_expired_lease_is_taken_over_and_the_old_holder_learns_it(
    make_store: Callable[..., Store],
) -> None:
    """A stops renewing a 2 s lease: B takes it over once the store's clock says it expired
    (never before 2 s of the store's time), and A's next renewal raises naming B."""
    a = Lease(make_store(), ttl=2, owner=A)
    b = Lease(make_store(), ttl=2, owner=B)
    assert a.acquire().writable
    started = time.monotonic()
    assert not b.acquire().writable
    verdict = poll(b.acquire, timeout=30)
    assert verdict.writable, verdict.message
    assert time.monotonic() - started >= 1.0  # the store's 1 s resolution, at worst
    assert "took over" in verdict.message
    with pytest.raises(OffsiteLeaseLostError, match="host-b pid 202"):
        a.renew()
    assert a.valid_for == 0
    with pytest.raises(OffsiteLeaseHeldError):
        a.require_writable()


def test_holder_stops_writing_when_its_own_monotonic_deadline_passes(
    make_store: Callable[..., Store],
) -> None:
    """The holder's validity runs on its monotonic clock from before its request: with the
    clock moved past the TTL, require_writable refuses even though nobody took over."""
    now = [1000.0]
    a = Lease(make_store(), ttl=60, owner=A, monotonic=lambda: now[0])
    assert a.acquire().writable
    now[0] += 59.5
    assert 0 < a.valid_for <= 0.5
    a.require_writable()
    now[0] += 1
    assert a.valid_for == 0
    with pytest.raises(OffsiteLeaseHeldError, match="held by host-a"):
        a.require_writable()


def test_unreadable_lease_counts_as_held_not_free(make_store: Callable[..., Store]) -> None:
    """A lease object with garbage in it is held by someone unknown until it expires: a
    newcomer stays read-only rather than assume the prefix is free."""
    store = make_store()
    key = join(store.target.prefix, LEASE_DIR, f"{7:020d}")
    obstore.put(store.objects.backend, key, b"\xff not json")
    obstore.put(store.objects.backend, join(store.target.prefix, LEASE_DIR, "junk"), b"x")
    verdict = Lease(store, ttl=300, owner=B).acquire()
    assert not verdict.writable and verdict.holder is None
    assert "unreadable lease" in verdict.message and verdict.generation == 7


def test_racing_sidecars_get_exactly_one_lease(make_store: Callable[..., Store]) -> None:
    """Eight sidecars acquire a free prefix at the same moment: exactly one is writable and
    every other verdict names that one."""
    owners = [LeaseOwner(f"host-{i}", i, f"{i:016x}") for i in range(8)]
    leases = [Lease(make_store(), ttl=300, owner=o) for o in owners]
    barrier = threading.Barrier(len(leases))
    verdicts: dict[int, LeaseVerdict] = {}

    def run(i: int) -> None:
        barrier.wait()
        verdicts[i] = leases[i].acquire()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(leases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, v in verdicts.items() if v.writable]
    assert len(winners) == 1
    assert {v.holder for i, v in verdicts.items() if i not in winners} == {owners[winners[0]]}


def test_second_sidecar_process_is_read_only_and_prunes_nothing(
    make_store: Callable[..., Store],
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """Sidecar A, a process of its own, holds the prefix and uploaded an archive. This
    sidecar B, same prefix, is read-only and says who holds it: its upload, delete (a prune)
    and abort of unfinished uploads raise OffsiteLeaseHeldError naming A; A's archive stays
    there, confirmed, and B can still list and download it. Once A releases, B writes."""
    store = make_store()
    server: SeaweedServer | None = request.getfixturevalue("seaweed") if backend == "s3" else None
    theirs = archive_file(tmp_path, NAME, 64 * 1024, seed=3)
    (tmp_path / "b").mkdir()
    mine = archive_file(tmp_path / "b", "b-daily-20261207T090000Z.tar.gz", 4096)
    with sidecar(store, server, theirs, lease_ttl=300) as a:
        assert a.says() == "holding"
        assert a.says() == "uploaded"
        b = Lease(store, ttl=300)
        verdict = b.acquire()
        assert not verdict.writable and verdict.holder is not None
        assert verdict.holder.pid == a.pid
        assert f"pid {a.pid} " in verdict.message and "read-only" in verdict.message
        writes: list[Callable[[], object]] = [
            lambda: store.upload(mine, lease=b),
            lambda: store.delete(NAME, lease=b),
            lambda: store.abort_orphaned_uploads(lease=b),
        ]
        for write in writes:
            with pytest.raises(OffsiteLeaseHeldError, match=f"pid {a.pid} .*read-only"):
                write()
        assert [(o.name, o.confirmed) for o in store.list().objects] == [(NAME, True)]
        store.download(NAME, tmp_path / "copy")
        assert (tmp_path / "copy").read_bytes() == theirs.read_bytes()
        a.tell()
        assert a.says() == "released"
    assert b.acquire().writable
    store.delete(NAME, lease=b)
    assert store.list().objects == ()


def test_a_lease_guards_only_its_own_prefix(tmp_path: Path) -> None:
    """A lease held on one prefix is no licence to write another: the write is refused
    before anything is touched."""
    here = Store(parse_target(f"file://{tmp_path / 'here'}"))
    there = Store(parse_target(f"file://{tmp_path / 'there'}"))
    lease = Lease(here, ttl=300, owner=A)
    assert lease.acquire().writable
    source = archive_file(tmp_path, NAME, 4096)
    with pytest.raises(ValueError, match="does not cover"):
        there.upload(source, lease=lease)
    assert there.list().objects == ()


def test_lease_lost_during_an_upload_leaves_it_unconfirmed(
    make_store: Callable[..., Store], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder's lease runs out (its monotonic clock passes the TTL) while the bytes are in
    flight: the upload raises OffsiteLeaseHeldError instead of writing the checksum record, so
    the object is not offsite."""
    now = [1000.0]
    store = make_store()
    lease = Lease(store, ttl=60, owner=A, monotonic=lambda: now[0])
    assert lease.acquire().writable
    real = transfer.file_chunks

    def slow_link(f: BinaryIO) -> Iterator[bytes]:
        yield from real(f)
        now[0] += 61  # the last byte went out after the lease's deadline

    monkeypatch.setattr(store_module, "file_chunks", slow_link)
    with pytest.raises(OffsiteLeaseHeldError, match="held by host-a"):
        store.upload(archive_file(tmp_path, NAME, 4096), lease=lease)
    confirmation = store.confirm(NAME)
    assert not confirmation.confirmed and "no checksum record" in confirmation.reason


def test_a_vanishing_clock_probe_is_one_error_not_an_endless_loop(
    make_store: Callable[..., Store],
) -> None:
    """Judging another sidecar's lease reads the store's clock through a probe object; if the
    probe keeps vanishing between its write and its read, acquire gives up with one
    OffsiteRequestError instead of recursing forever."""
    assert Lease(make_store(), ttl=300, owner=A).acquire().writable
    store = make_store()
    real_head = store.objects.head
    heads: list[str] = []

    def head(key: str) -> object:
        if "/.offsite/clock/" in f"/{key}":
            heads.append(key)
            return None
        return real_head(key)

    store.objects.head = head  # type: ignore[method-assign,assignment]
    with pytest.raises(OffsiteRequestError, match="vanished"):
        Lease(store, ttl=300, owner=B).acquire()
    assert len(heads) == 3


def test_a_claim_whose_answer_was_lost_is_renewed_at_the_next_pass(
    make_store: Callable[..., Store],
) -> None:
    """A's create of its generation lands, but the listing right after it fails (the endpoint
    went away mid-claim): the next acquire finds A's own live generation and renews it. It
    used to bounce between acquire and renew until RecursionError, on every pass for good."""
    store = make_store()
    lease = Lease(store, ttl=300, owner=A)
    real_list = store.objects.list
    calls: list[str] = []

    def list_after_create_fails(prefix: str) -> object:
        calls.append(prefix)
        if len(calls) == 2:  # acquire lists, creates generation 1, then lists again
            raise OffsiteRequestError(store.url, f"list {prefix}", "connection refused")
        return real_list(prefix)

    store.objects.list = list_after_create_fails  # type: ignore[method-assign,assignment]
    with pytest.raises(OffsiteRequestError, match="connection refused"):
        lease.acquire()
    assert lease.generation is None and lease.valid_for == 0
    verdict = lease.acquire()
    assert verdict.writable and verdict.generation == 2
    assert lease.valid_for > 0
    assert not Lease(make_store(), ttl=300, owner=B).acquire().writable


def test_a_planted_lease_at_the_largest_name_never_stops_the_prefix(
    make_store: Callable[..., Store],
) -> None:
    """Outside attack 4: garbage at `.offsite/lease/99999999999999999999` (the largest 20-digit
    name) made the sidecar write a 21-digit generation that never counted, read-only for good.
    A name at or above the bound is planted: ignored, the lease taken at once, then renewed,
    another sidecar read-only naming the holder, and the planted name deleted."""
    store = make_store()
    planted = join(store.target.prefix, LEASE_DIR, "9" * 20)
    obstore.put(store.objects.backend, planted, b"\xff planted")
    a = Lease(store, ttl=300, owner=A)
    verdict = a.acquire()
    assert verdict.writable, verdict.message
    assert a.renew().writable
    assert Lease(make_store(), ttl=300, owner=B).acquire().holder == A
    assert store.objects.read_small(planted, 10) is None


def test_a_planted_lease_just_below_the_bound_expires_then_numbering_restarts(
    make_store: Callable[..., Store],
) -> None:
    """Garbage at the highest generation a sidecar counts: held by someone unknown for the TTL
    (one line naming the object, a positive validity), then free like any other unreadable
    lease: the sidecar taking it numbers again from 1, renews, and a second sidecar is
    read-only naming it."""
    store = make_store()
    top = join(store.target.prefix, LEASE_DIR, f"{GENERATION_BOUND - 1:020d}")
    obstore.put(store.objects.backend, top, b"\xff planted")
    a = Lease(store, ttl=2, owner=A)
    first = a.acquire()
    assert not first.writable and first.expires_in > 0
    assert f"unreadable lease object ({top}" in first.message, first.message
    assert "valid for -" not in first.message
    verdict = poll(a.acquire, timeout=30)
    assert verdict.writable, verdict.message
    assert verdict.generation == 1
    assert a.renew().generation == 2
    b = Lease(make_store(), ttl=2, owner=B).acquire()
    assert not b.writable and b.holder == A


def test_a_lease_not_taken_says_why_in_one_true_line(make_store: Callable[..., Store]) -> None:
    """require_writable on a sidecar that never took the lease, and on a holder whose lease
    ran out (its monotonic deadline and the store's clock both past the TTL): never `held by
    nobody`, never a negative validity; the expired holder is named."""
    now = [1000.0]
    store = make_store()
    a = Lease(store, ttl=1, owner=A, monotonic=lambda: now[0])
    b = Lease(make_store(), ttl=1, owner=B)
    with pytest.raises(OffsiteLeaseHeldError, match="no lease is taken yet") as free:
        b.require_writable()
    assert a.acquire().generation == 1
    now[0] += 5
    meta = store.objects.head(join(store.target.prefix, LEASE_DIR, f"{1:020d}"))
    assert meta is not None
    wait_until(
        lambda: (a.store_now() - meta.modified).total_seconds() > 3,
        what="A's lease expired on the store's clock",
    )
    with pytest.raises(OffsiteLeaseHeldError, match="expired") as expired:
        a.require_writable()
    for text in (str(free.value), str(expired.value)):
        assert "nobody" not in text and "valid for -" not in text, text
    assert "the lease of host-a pid 101" in str(expired.value)
