"""What is wrong now, as notification conditions: (event, subject) -> one line of detail.

Every condition is read off the `HealthStatus` `/healthz` reports, so a message says exactly
what `/healthz` and the alerts say: a failed scheduled backup (until one of the policy
succeeds), an overdue policy (the verdict `backup_sidecar_policy_overdue` shows), a failed
restore drill, a policy whose offsite copies lag, an unhealthy database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from backup_sidecar.jobs.runtime import MANUAL_POLICY
from backup_sidecar.service.health import DRILL_POLICY, HealthStatus
from backup_sidecar.settings import Settings

Key = tuple[str, str]

#: Event -> (title while failing, title once recovered); ``{subject}`` is the policy/database.
TITLES: dict[str, tuple[str, str]] = {
    "backup_failed": (
        "policy {subject!r}: backups fail",
        "policy {subject!r}: backups succeed again",
    ),
    "backup_overdue": (
        "policy {subject!r}: backup overdue",
        "policy {subject!r}: backups are on time again",
    ),
    "drill_failed": ("the restore drill failed", "the restore drill passes again"),
    "offsite_lagging": (
        "policy {subject!r}: offsite copies lag",
        "policy {subject!r}: offsite copies caught up",
    ),
    "database_unhealthy": (
        "database {subject!r} is unhealthy",
        "database {subject!r} is healthy again",
    ),
}
#: Events whose subject is a database; every other one's is a policy.
DATABASE_EVENTS = frozenset({"database_unhealthy"})
_POLICY_PREFIX = re.compile(r"policy '([^']+)'")


@dataclass(frozen=True)
class Message:
    """One notification: a condition began (``failing``) or ended."""

    event: str
    subject: str
    failing: bool
    detail: str

    @property
    def title(self) -> str:
        failing, recovered = TITLES.get(
            self.event, (f"{self.event}: {{subject}}", f"{self.event}: {{subject}} recovered")
        )
        return "backup-sidecar: " + (failing if self.failing else recovered).format(
            subject=self.subject
        )

    @property
    def body(self) -> str:
        if self.failing:
            return self.detail
        return f"Recovered. It was: {self.detail}"


def conditions(status: HealthStatus) -> dict[Key, str]:
    """Every condition `status` shows, with its detail."""
    found: dict[Key, str] = {}
    for policy, error in status.failed_backups:
        found["backup_failed", policy] = f"policy {policy!r}: the last backup failed: {error}"
    for overdue in status.overdue:
        found["backup_overdue", overdue.policy] = overdue.reason()
    if status.last_drill_failed:
        detail = f": {status.last_drill_error}" if status.last_drill_error else ""
        found["drill_failed", DRILL_POLICY] = f"the last restore drill failed{detail}"
    for reason in status.offsite_lagging:
        named = _POLICY_PREFIX.match(reason)
        found["offsite_lagging", named.group(1) if named else reason] = reason
    for db in status.databases:
        if db.known and not db.healthy:
            found["database_unhealthy", db.name] = (
                f"database {db.name!r} ({db.path}) is unhealthy: {db.error}"
            )
    return found


def still_watched(key: Key, settings: Settings) -> bool:
    """Whether the subject of a condition is still configured (a reload may remove it: its
    state is dropped without a "recovered" message)."""
    event, subject = key
    if event in DATABASE_EVENTS:
        return subject in settings.databases
    if event in TITLES:  # `manual`: the policy of a backup asked for without one
        return subject in settings.policies or subject == MANUAL_POLICY
    return True
