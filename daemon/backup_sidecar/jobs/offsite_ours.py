"""Which offsite copies are this sidecar's: the one rule offsite retention, `restore --latest
--from-offsite`, `init --restore-from-offsite`, `verify --offsite --latest` and the scheduled
offsite verify apply, to archives and incremental backups (page stores) alike.

A copy is ours when its policy is a configured one and the databases it holds are exactly the
set that policy backs up (its ``databases``, else every configured database); a restore never
takes a `pre_restore` copy besides (jobs/offsite_pick.py). Another sidecar sharing the prefix
under the same policy name with another database set is not ours, nor is this one's copy from
before its databases changed: neither is pruned, taken by `--latest` or verified as the
policy's newest (each can still be restored or verified by NAME).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from backup_sidecar import offsite
from backup_sidecar.jobs.runtime import Runtime


def own_copy(
    policy: str | None,
    holds: Collection[str],
    *,
    policies: Collection[str],
    databases: Collection[str],
    policy_databases: Mapping[str, Collection[str]] | None = None,
) -> bool:
    """Whether a copy of ``policy`` holding ``holds`` is ours (module docstring): ``policies``
    the configured ones, a policy's set its ``policy_databases`` entry, else ``databases``."""
    if policy is None or policy not in policies:
        return False
    own = (policy_databases or {}).get(policy) or databases
    return set(holds) == set(own)


def own_origin(
    obj: offsite.OffsiteObject,
    *,
    policies: Collection[str],
    databases: Collection[str],
    policy_databases: Mapping[str, Collection[str]] | None = None,
) -> bool | None:
    """Whether ``obj``'s record's origin says it is ours; None when it has no origin (nothing
    proves whose it is: the archive's own metadata decides once it is fetched)."""
    origin = obj.record.origin if obj.record is not None else None
    if origin is None:
        return None
    return own_copy(
        origin.policy,
        origin.databases,
        policies=policies,
        databases=databases,
        policy_databases=policy_databases,
    )


@dataclass(frozen=True)
class Ours:
    """This sidecar's policies and the database set each backs up (``own_copy``'s terms)."""

    policies: frozenset[str]
    databases: tuple[str, ...]
    policy_databases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, rt: Runtime) -> Ours:
        """The configured policies and databases of ``rt``."""
        return cls(frozenset(rt.keep), tuple(rt.databases), dict(rt.policy_databases))

    def copy(self, policy: str | None, holds: Collection[str]) -> bool:
        """Whether a copy of ``policy`` holding ``holds`` is ours."""
        return own_copy(
            policy,
            holds,
            policies=self.policies,
            databases=self.databases,
            policy_databases=self.policy_databases,
        )

    def origin(self, obj: offsite.OffsiteObject) -> bool | None:
        """Whether ``obj``'s record's origin says it is ours (None: no origin)."""
        return own_origin(
            obj,
            policies=self.policies,
            databases=self.databases,
            policy_databases=self.policy_databases,
        )
