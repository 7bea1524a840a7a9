"""Whether the offsite copies lag: `/healthz`'s offsite reasons, `backup_sidecar_offsite_lagging`
and `backup_sidecar_offsite_read_only`.

A policy lags when all of these hold (``offsite.max_age`` set):

- it has a verified local archive not confirmed offsite (pending), and has had one without a
  break for longer than ``max_age`` of this process's monotonic clock: a fresh daemon, a new
  policy and a rarely run policy's new archive each get ``max_age`` before they can lag;
- its newest confirmed offsite copy is older than ``max_age``, or there is none. The copy's age
  is its age when this process learned of it (the store's upload time against the wall clock,
  once) plus the monotonic time since, so a wall clock stepped later neither hides nor fakes it.

Everything clears as soon as a copy lands (nothing pending, or a fresh newest copy). What is
pending is the uploader's last view; a pass that cannot reach the store keeps the last known
confirmed set, so a dead endpoint still ages the pending archives. Read-only (another sidecar
holds the lease) is not a reason: a second sidecar on one prefix is a legitimate setup; it is a
note in `/healthz` and a gauge.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from backup_sidecar.jobs.runtime import MANUAL_POLICY, Runtime
from backup_sidecar.service.health import HealthState
from backup_sidecar.service.live import LiveConfig
from backup_sidecar.service.metric_families import MetricFamilies


@dataclass
class _Policy:
    pending: int = 0
    #: Monotonic time this process first saw the policy pending (None: nothing pending).
    pending_since: float | None = None
    #: The newest confirmed copy: its time (the store's, or ours for an upload just made),
    #: its age when learned, and the monotonic time it was learned.
    newest_at: float | None = None
    newest_age0: float = 0.0
    newest_seen: float = 0.0


class OffsiteLag:
    """The uploader's view of each policy, judged by ``check`` (the health watcher's interval
    and after every pass) against the live ``offsite.max_age``."""

    def __init__(
        self,
        *,
        live: LiveConfig,
        health: HealthState,
        families: MetricFamilies,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._live = live
        self._health = health
        self._families = families
        self._monotonic = monotonic
        self._clock = clock
        self._lock = threading.Lock()
        self._policies: dict[str, _Policy] = {}
        self._read_only: str | None = None
        self._gauged: set[str] = set()

    def observed(self, pending: Mapping[str, int], newest: Mapping[str, float]) -> None:
        """One pass's view: per policy the local archives not confirmed offsite, and the time
        of its newest confirmed copy (a policy absent from ``newest`` has none, or it is not
        known: the store did not answer)."""
        now = self._monotonic()
        with self._lock:
            for policy in pending.keys() | newest.keys() | self._policies.keys():
                state = self._policies.setdefault(policy, _Policy())
                state.pending = pending.get(policy, 0)
                if state.pending == 0:
                    state.pending_since = None
                elif state.pending_since is None:
                    state.pending_since = now
                at = newest.get(policy)
                if at is not None and at != state.newest_at:
                    state.newest_at = at
                    state.newest_age0 = max(0.0, self._clock() - at)
                    state.newest_seen = now

    def uploaded(self, policy: str, pending: int) -> None:
        """An archive of ``policy`` was just confirmed offsite; ``pending`` of it are left."""
        now = self._monotonic()
        with self._lock:
            state = self._policies.setdefault(policy, _Policy())
            state.newest_at, state.newest_age0, state.newest_seen = self._clock(), 0.0, now
            state.pending = pending
            if pending == 0:
                state.pending_since = None

    def read_only(self, holder: str | None) -> None:
        """``holder`` has the lease (None: this sidecar writes, or no store is configured)."""
        with self._lock:
            self._read_only = None if holder is None else f"offsite is read-only: {holder}"

    def reset(self) -> None:
        """Forget everything (the store changed or the offsite section went): the next pass
        rebuilds the view from the bucket."""
        with self._lock:
            self._policies.clear()
            self._read_only = None

    def check(self) -> None:
        """Publish the verdict for the configured policies (a removed one loses its reason and
        its series). Call under the live configuration's publishing lock."""
        rt = self._live.now.runtime
        spec = rt.offsite
        max_age = spec.max_age if spec is not None else None
        now = self._monotonic()
        with self._lock:
            watched = watched_policies(rt) if max_age is not None else set()
            late = {
                p: s
                for p in sorted(watched)
                if (s := self._policies.get(p)) is not None and _lags(s, now, max_age)
            }
            read_only = self._read_only if spec is not None else None
        reasons: tuple[str, ...] = ()
        if max_age is not None:
            reasons = tuple(_reason(p, s, now, max_age) for p, s in late.items())
        self._health.set_offsite(lagging=reasons, read_only=read_only)
        self._families.offsite_read_only.set(1.0 if read_only is not None else 0.0)
        for policy in self._gauged - watched:
            self._families.offsite_lagging.remove(policy)
        for policy in watched:
            self._families.offsite_lagging.labels(policy).set(1.0 if policy in late else 0.0)
        self._gauged = watched


def watched_policies(rt: Runtime) -> set[str]:
    """The policies whose offsite copies are watched: the configured ones and ``manual``."""
    return {*rt.keep, MANUAL_POLICY}


def _lags(state: _Policy, now: float, max_age: float | None) -> bool:
    if max_age is None or state.pending_since is None or now - state.pending_since <= max_age:
        return False
    return state.newest_at is None or _newest_age(state, now) > max_age


def _newest_age(state: _Policy, now: float) -> float:
    return state.newest_age0 + (now - state.newest_seen)


def _reason(policy: str, state: _Policy, now: float, max_age: float) -> str:
    limit = timedelta(seconds=max_age)
    waiting = f"{state.pending} archive(s) pending upload"
    if state.newest_at is None:
        since = timedelta(seconds=round(now - (state.pending_since or now)))
        return (
            f"policy {policy!r}: no archive confirmed offsite for {since}, longer than "
            f"offsite.max_age {limit} ({waiting})"
        )
    age = timedelta(seconds=round(_newest_age(state, now)))
    at = datetime.fromtimestamp(state.newest_at, UTC).isoformat()
    return (
        f"policy {policy!r}: the newest offsite copy (confirmed {at}) is {age} old, older than "
        f"offsite.max_age {limit} ({waiting})"
    )
