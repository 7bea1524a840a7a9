"""One writer per prefix: a lease made of numbered objects, each written by conditional create.

``<prefix>/.offsite/lease/<generation>`` (20 digits) holds its writer's identity (host, pid, a
random id), its time to live and whether it was released. The holder is the writer of the
highest generation. Acquiring, renewing, taking over and releasing all *create* the next
generation (S3 ``If-None-Match: *``, local O_EXCL), so of two sidecars racing for the same
number exactly one wins; the winner then lists again and stands down if a higher number exists.
Only conditional create is needed, which both S3 (SeaweedFS, MinIO, AWS) and a directory give.

The expiry rule, against clock skew: a generation is expired when the *store's* clock says its
age exceeds its TTL plus one second (S3 timestamps have one-second resolution). Its age is the
store's now minus the object's own Last-Modified, the store's now read from the Last-Modified
of a probe object this sidecar writes at that moment; no wall clock is compared with another
machine's. The holder, in turn, counts its lease valid only until its *monotonic* clock passes
the moment it sent the winning request plus the TTL (``valid_for``), so it stops writing before
anyone may judge the lease expired, however the wall clocks stand. It renews at a third of the
TTL; a renewal that finds a higher generation raises OffsiteLeaseLostError.

Generations live below ``GENERATION_BOUND`` (10**18: at one renewal a millisecond, 30 million
years away), so a name at or above it was planted: it is never taken for the holder and the
next holder deletes it. A planted name just below the bound is an unreadable lease like any
other, free once its TTL has passed on the store's clock; the next number would reach the bound,
so the sidecar taking it deletes the generations it listed and numbers again from 1 (a racing
sidecar lists the new number, or loses the conditional create).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from backup_sidecar.errors import (
    OffsiteLeaseHeldError,
    OffsiteLeaseLostError,
    OffsiteRequestError,
)
from backup_sidecar.offsite import record as rec
from backup_sidecar.offsite.bucket import Bucket
from backup_sidecar.offsite.meta import Meta
from backup_sidecar.offsite.objects import Objects

_BODY_MAX = 4096
_SLACK_S = 1.0
_CLOCK_TRIES = 3
GENERATION_BOUND = 10**18


@dataclass(frozen=True)
class LeaseOwner:
    host: str
    pid: int
    id: str

    @classmethod
    def this_process(cls) -> LeaseOwner:
        return cls(socket.gethostname(), os.getpid(), secrets.token_hex(8))

    def describe(self) -> str:
        return f"{self.host} pid {self.pid} (lease id {self.id})"


@dataclass(frozen=True)
class LeaseVerdict:
    """``writable`` for the holder; otherwise ``holder`` names who has the prefix."""

    writable: bool
    holder: LeaseOwner | None
    generation: int
    expires_in: float
    message: str
    #: who holds the prefix, or why this sidecar cannot write it (one line; "" when writable)
    who: str = ""

    def read_only_reason(self, url: str) -> str | None:
        """One line for health and metrics; None when writable."""
        if self.writable:
            return None
        return f"{self.who} holds {url}" if self.expires_in > 0 else f"{url}: {self.who}"


@dataclass(frozen=True)
class _Generation:
    number: int
    owner: LeaseOwner | None  # None: an unreadable body, held by someone unknown
    ttl: float
    released: bool
    modified: datetime


class Lease:
    """The lease on ``store``'s prefix for ``owner`` (default: this process)."""

    def __init__(
        self,
        store: Bucket,
        *,
        ttl: float = 300.0,
        owner: LeaseOwner | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._objects: Objects = store.objects
        self.url = store.url
        self.prefix = store.target.prefix
        self._dir = rec.join(store.target.prefix, rec.LEASE_DIR)
        self._clock_key = rec.join(store.target.prefix, rec.CLOCK_DIR)
        self.ttl = ttl
        self.owner = owner or LeaseOwner.this_process()
        self._monotonic = monotonic
        self.generation: int | None = None
        self._deadline = 0.0

    @property
    def valid_for(self) -> float:
        """Seconds this sidecar may still write (0 when it does not hold the lease)."""
        if self.generation is None:
            return 0.0
        return max(0.0, self._deadline - self._monotonic())

    def acquire(self) -> LeaseVerdict:
        """Take the lease if it is free, released, expired or ours; else a read-only verdict."""
        listed = self._numbered()
        current = self._newest(listed)
        if current is not None and current.owner == self.owner and not current.released:
            self.generation = current.number  # held, or a claim whose answer was lost
            return self.renew()
        if current is not None and not current.released:
            left = self._expires_in(current)
            if left > 0:
                return self._read_only(current, left)
        if current is not None and current.number + 1 >= GENERATION_BOUND:
            return self._restart(listed, took_over=current)
        return self._claim((current.number if current else 0) + 1, took_over=current)

    def renew(self) -> LeaseVerdict:
        """Extend a held lease; OffsiteLeaseLostError if another sidecar has taken it."""
        if self.generation is None:
            return self.acquire()
        if self.generation + 1 >= GENERATION_BOUND:
            verdict = self._restart(self._numbered(), took_over=None)
        else:
            verdict = self._claim(self.generation + 1, took_over=None)
        if not verdict.writable:
            self.generation = None
            raise OffsiteLeaseLostError(self._objects.url, verdict.message)
        return verdict

    def release(self) -> None:
        """Give the prefix up now (a released generation is free to anyone at once)."""
        if self.generation is None:
            return
        number = self.generation + 1
        self.generation = None
        if self._objects.create(self._key(number), self._body(released=True)):
            self._prune(below=number)

    def require_writable(self) -> None:
        """Raise OffsiteLeaseHeldError unless this sidecar holds a valid lease right now."""
        if self.valid_for > 0:
            return
        current = self._newest()
        if current is None:
            raise OffsiteLeaseHeldError(self._objects.url, "no lease is taken yet", 0.0)
        left = self._expires_in(current)
        holder = self._who(current)
        if current.released:
            holder = f"{holder} released it"
        elif left <= 0:
            holder = f"the lease of {holder} expired {-left:.0f}s ago"
        raise OffsiteLeaseHeldError(self._objects.url, holder, left)

    # -- internals -----------------------------------------------------------------------------

    def _claim(self, number: int, *, took_over: _Generation | None) -> LeaseVerdict:
        started = self._monotonic()
        if not self._objects.create(self._key(number), self._body(released=False)):
            newest = self._newest()
            ours = newest is not None and newest.number == number and newest.owner == self.owner
            if not ours:  # else our own create, answered late and retried
                assert newest is not None
                return self._read_only(newest, self._expires_in(newest))
        newest = self._newest()
        if newest is None or newest.number != number:
            assert newest is not None
            return self._read_only(newest, self._expires_in(newest))
        self.generation = number
        self._deadline = started + self.ttl
        self._prune(below=number)
        how = "took over an expired lease" if took_over is not None else "holds the lease"
        return LeaseVerdict(True, self.owner, number, self.ttl, f"{self.owner.describe()} {how}")

    def _restart(
        self, listed: list[tuple[int, Meta]], *, took_over: _Generation | None
    ) -> LeaseVerdict:
        """Number again from 1: delete the generations of ``listed`` (the listing that found
        the newest free, or ours), then claim after whatever a racing sidecar made meanwhile."""
        for _, meta in listed:
            self._objects.delete(meta.key)
        current = self._newest()
        if current is None:
            return self._claim(1, took_over=took_over)
        if current.owner != self.owner and not current.released:
            left = self._expires_in(current)
            if left > 0 or current.number + 1 >= GENERATION_BOUND:
                return self._read_only(current, left)
        return self._claim(current.number + 1, took_over=took_over)

    def _who(self, current: _Generation) -> str:
        if current.owner is not None:
            return current.owner.describe()
        return f"an unreadable lease object ({self._key(current.number)}, owner unknown)"

    def _read_only(self, current: _Generation, left: float) -> LeaseVerdict:
        holder = self._who(current)
        if left <= 0:
            holder = f"the lease of {holder} expired {-left:.0f}s ago; taken at the next attempt"
        message = str(OffsiteLeaseHeldError(self._objects.url, holder, left))
        return LeaseVerdict(False, current.owner, current.number, max(left, 0.0), message, holder)

    def store_now(self) -> datetime:
        """The store's clock now (what an object's Last-Modified is compared with)."""
        return self._store_now()

    def _expires_in(self, current: _Generation) -> float:
        if current.released:
            return 0.0
        age = (self._store_now() - current.modified).total_seconds()
        return current.ttl + _SLACK_S - age

    def _store_now(self) -> datetime:
        """The store's clock: the Last-Modified of a probe object written now."""
        key = f"{self._clock_key}/{self.owner.id}"
        for _ in range(_CLOCK_TRIES):
            self._objects.put(key, b"clock probe")
            meta = self._objects.head(key)
            self._objects.delete(key)
            if meta is not None:  # else it vanished under us (someone cleaning up): again
                return meta.modified
        raise OffsiteRequestError(
            self._objects.url,
            f"read the store's clock ({key})",
            f"the probe object vanished between its write and its read {_CLOCK_TRIES} times",
        )

    def _numbered(self) -> list[tuple[int, Meta]]:
        """The generations listed (20-digit names); planted ones at or above the bound too."""
        numbered: list[tuple[int, Meta]] = []
        for meta in self._objects.list(self._dir + "/"):
            tail = meta.key.rsplit("/", 1)[-1]
            if len(tail) == 20 and tail.isdigit():
                numbered.append((int(tail), meta))
        return numbered

    def _newest(self, listed: list[tuple[int, Meta]] | None = None) -> _Generation | None:
        found = self._numbered() if listed is None else listed
        numbered = [(n, meta) for n, meta in found if n < GENERATION_BOUND]  # planted: ignored
        for number, meta in sorted(numbered, key=lambda item: item[0], reverse=True):
            raw = self._objects.read_small(meta.key, _BODY_MAX)
            if raw is not None:  # else pruned between the listing and the read
                return _parse(number, raw, meta.modified, default_ttl=self.ttl)
        return None

    def _prune(self, *, below: int) -> None:
        for number, meta in self._numbered():
            if number < below or number >= GENERATION_BOUND:
                self._objects.delete(meta.key)

    def _key(self, number: int) -> str:
        return f"{self._dir}/{number:020d}"

    def _body(self, *, released: bool) -> bytes:
        body = {
            "format": 1,
            "host": self.owner.host,
            "pid": self.owner.pid,
            "id": self.owner.id,
            "ttl_seconds": self.ttl,
            "released": released,
        }
        return json.dumps(body, sort_keys=True).encode()


def _parse(number: int, raw: bytes, modified: datetime, *, default_ttl: float) -> _Generation:
    """A generation from untrusted bytes; an unreadable one counts as held by someone unknown
    for the default TTL (never as free)."""
    try:
        body = json.loads(raw[:_BODY_MAX])
        owner = LeaseOwner(str(body["host"]), int(body["pid"]), str(body["id"]))
        ttl = float(body["ttl_seconds"])
        released = body.get("released") is True
    except (ValueError, TypeError, KeyError, RecursionError, OverflowError):
        return _Generation(number, None, default_ttl, False, modified)
    if not 0 < ttl < 86400 * 7:
        ttl = default_ttl
    return _Generation(number, owner, ttl, released, modified)
