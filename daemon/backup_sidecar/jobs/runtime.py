"""The runtime configuration: the plain fields the jobs need, mapped from the settings."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from backup_sidecar import archiver
from backup_sidecar.archiver import DatabaseSpec
from backup_sidecar.errors import UnknownDatabaseError, UnknownPolicyError

#: The policy of a backup asked for without one (CLI `backup`, socket `backup`).
MANUAL_POLICY = "manual"


@dataclass(frozen=True)
class Runtime:
    """Plain fields the jobs need, mapped from the settings by the command layer."""

    backup_dir: Path
    databases: Mapping[str, DatabaseSpec]
    keep: Mapping[str, int]
    policy_databases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    level: int = archiver.DEFAULT_LEVEL
    #: Threads for a backup's integrity check and compression (1: one after the other), and
    #: whether the compression yields its CPU while the check runs (backup_sidecar.cpus).
    threads: int = 1
    pace: bool = False
    nice: int = 0
    lock_timeout: float = 30.0
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def backup_policies(self) -> tuple[str, ...]:
        """The policies a backup asked for by a user may go under: ``manual`` and every
        configured one except ``pre_restore``, which only restores write."""
        named = (p for p in self.keep if p != archiver.PRE_RESTORE_POLICY)
        return tuple(dict.fromkeys((MANUAL_POLICY, *named)))

    def check_backup_policy(self, policy: str) -> None:
        """Refuse a policy outside `backup_policies`: its archives would never be pruned."""
        if policy not in self.backup_policies():
            raise UnknownPolicyError(policy, self.backup_policies())

    def select(
        self, names: Sequence[str] | None, *, policy: str | None = None
    ) -> list[DatabaseSpec]:
        """The databases named (default: the policy's, else all), refusing unknown names."""
        chosen = list(names or self.policy_databases.get(policy or "", ()) or self.databases)
        for name in chosen:
            if name not in self.databases:
                raise UnknownDatabaseError(name, tuple(self.databases))
        return [self.databases[name] for name in dict.fromkeys(chosen)]
