"""Whether a policy is overdue: its newest success older than its `max_backup_age`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta


def policy_overdue(
    last_success: datetime | None,
    max_age: timedelta,
    now: datetime,
    *,
    started_at: datetime | None = None,
) -> bool:
    """Whether a policy's newest success is older than `max_age`.

    A policy that never succeeded is overdue, unless `started_at` is given: then it gets
    `max_age` from that moment (a fresh daemon is not unhealthy before its first run is due).
    """
    reference = last_success if last_success is not None else started_at
    if reference is None:
        return True
    return now - reference > max_age


@dataclass(frozen=True)
class OverduePolicy:
    """A policy whose last success is older than its `max_backup_age`."""

    policy: str
    last_success: datetime | None
    max_age: timedelta
    #: Set when the archives' dates do not show it (a wall clock stepped back dates the newest
    #: in the future) but no new archive came for this many seconds of the monotonic clock.
    silent_s: float | None = None

    def reason(self) -> str:
        if self.silent_s is not None:
            dated = self.last_success
            newest = f" (newest archive dated {dated.isoformat()})" if dated is not None else ""
            silent = timedelta(seconds=round(self.silent_s))
            return (
                f"policy {self.policy!r}: no new backup for {silent}, longer than "
                f"{self.max_age}{newest}"
            )
        if self.last_success is None:
            return f"policy {self.policy!r} has no successful backup within {self.max_age}"
        return (
            f"policy {self.policy!r}: last successful backup at {self.last_success.isoformat()} "
            f"is older than {self.max_age}"
        )


def overdue_policies(
    last_success: Mapping[str, datetime | None],
    max_age: Mapping[str, timedelta],
    *,
    now: datetime,
    started_at: datetime | Mapping[str, datetime] | None = None,
    silent_s: Mapping[str, float] | None = None,
) -> tuple[OverduePolicy, ...]:
    """The policies with a `max_age` whose last success (None: never) is too old, by name.

    `started_at` is when the never-succeeded policies' grace began: one moment for all, or one
    per policy (a policy missing from the mapping has none). `silent_s` is, per policy, how
    long (monotonic seconds) no new archive of it appeared: longer than `max_age` is overdue
    whatever the archives' dates say, so the check never stays silent while no backup runs."""

    def grace(policy: str) -> datetime | None:
        if isinstance(started_at, Mapping):
            return started_at.get(policy)
        return started_at

    found = []
    for policy, age in sorted(max_age.items()):
        last = last_success.get(policy)
        if policy_overdue(last, age, now, started_at=grace(policy)):
            found.append(OverduePolicy(policy, last, age))
            continue
        silent = (silent_s or {}).get(policy)
        if silent is not None and silent > age.total_seconds():
            found.append(OverduePolicy(policy, last, age, silent_s=silent))
    return tuple(found)
