"""Each configured policy's last success, kept equal to what the backup directory holds.

One place decides it at start, on every reload and on every health interval, from the same
listing: a policy added by SIGHUP whose archives already exist is not "never succeeded", and a
policy whose newest archive was deleted by hand no longer claims it. A success the daemon just
recorded (its finish time) is never moved back to the archive's creation time by a rescan.

"Newest" is by creation sequence (``ArchiveInfo.newness``), never by the wall clock. The ledger
also notes, on the monotonic clock, when each policy last got a new newest archive (or began
to be watched): `silent_for` lets the overdue check fire while no backup runs even when the
archives' dates say nothing (a clock stepped back dates the newest archive in the future).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable
from datetime import UTC, datetime
from typing import Protocol

import structlog

from backup_sidecar import archiver
from backup_sidecar.archiver import ArchiveInfo

log = structlog.get_logger(__name__)


class SuccessMetrics(Protocol):
    def last_success_known(self, policy: str, finished_at: datetime) -> None: ...
    def last_success_reset(self, policy: str, finished_at: datetime | None) -> None: ...
    def has_last_success(self, policy: str) -> bool: ...


def counts_as_success(archive: ArchiveInfo) -> bool:
    """An incremental backup is a success once written (its check passed in its read
    transaction); `verified` for it means a later rebuild matched, which no schedule runs."""
    return archive.kind == "incremental" and archive.status is archiver.ArchiveStatus.UNVERIFIED


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SuccessLedger:
    """The newest verified archive of each configured policy, as of the last `sync`."""

    def __init__(
        self,
        metrics: SuccessMetrics,
        *,
        clock: Callable[[], datetime] = _utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metrics = metrics
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        #: policy -> (archive name, created_at) of its newest verified archive on disk
        self._newest: dict[str, tuple[str, datetime]] = {}
        #: policy -> monotonic time a new newest archive last appeared, or it began to be watched
        self._fresh: dict[str, float] = {}
        #: policy -> when it began to be watched without a known archive: it has
        #: `max_backup_age` from then before it is overdue. A policy whose archives vanished
        #: has none (it had a restore point and lost it).
        self._grace: dict[str, datetime] = {}
        self._watched: set[str] = set()
        self._absent: set[str] = set()

    def sync(self, archives: Iterable[ArchiveInfo], *, policies: Collection[str]) -> None:
        """Publish each policy's last success from `archives` (a listing, newest first)."""
        found: dict[str, tuple[str, datetime]] = {}
        names: set[str] = set()
        for archive in archives:
            if archive.status is archiver.ArchiveStatus.VERIFIED or counts_as_success(archive):
                found.setdefault(archive.policy, (archive.name, archive.created_at))
                names.add(archive.name)
        now, mono = self._clock(), self._monotonic()
        with self._lock:
            for policy in policies:
                if policy not in self._watched:
                    self._watched.add(policy)
                    self._grace[policy] = now
                    self._fresh[policy] = mono
                current, before = found.get(policy), self._newest.get(policy)
                if current is None and before is None:
                    # A success recorded but not on disk: deleted before a scan saw it, or
                    # published after this listing was taken. Only a second scan tells.
                    if not self._metrics.has_last_success(policy):
                        self._absent.discard(policy)
                        continue
                    if policy not in self._absent:
                        self._absent.add(policy)
                        continue
                self._absent.discard(policy)
                if current is not None and current == before:
                    continue
                if current is None:
                    log.warning("last_success_lost", policy=policy, archive=before and before[0])
                    self._metrics.last_success_reset(policy, None)
                    self._newest.pop(policy, None)
                    self._grace.pop(policy, None)
                    continue
                if before is not None and before[0] not in names:
                    # The newest archive went: fall back to the one that is there now.
                    log.warning("last_success_lost", policy=policy, archive=before[0])
                    self._metrics.last_success_reset(policy, current[1])
                else:
                    self._metrics.last_success_known(policy, current[1])
                    self._fresh[policy] = mono
                self._newest[policy] = current

    def forget(self, policies: Iterable[str]) -> None:
        """Drop policies that are no longer configured (their series are removed elsewhere)."""
        with self._lock:
            for policy in policies:
                self._newest.pop(policy, None)
                self._fresh.pop(policy, None)
                self._grace.pop(policy, None)
                self._watched.discard(policy)
                self._absent.discard(policy)

    def newest(self) -> dict[str, datetime]:
        """Policy -> creation time of its newest verified archive, for the overdue check."""
        with self._lock:
            return {policy: at for policy, (_, at) in self._newest.items()}

    def silent_for(self) -> dict[str, float]:
        """Policy -> seconds (monotonic) since a new newest archive of it last appeared, or
        since it began to be watched: how long no backup of it has come, whatever the dates."""
        with self._lock:
            mono = self._monotonic()
            return {policy: mono - at for policy, at in self._fresh.items()}

    def grace_from(self) -> dict[str, datetime]:
        """Policy -> start of its grace, for policies that never had an archive here."""
        with self._lock:
            return dict(self._grace)
