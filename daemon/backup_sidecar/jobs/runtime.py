"""The runtime configuration: the plain fields the jobs need, mapped from the settings.

The one place the settings become what the jobs take (the archiver never sees YAML): the
daemon builds it with `Runtime.from_settings` at start and on every reload, the CLI with
`Runtime.load`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING

from backup_sidecar import archiver
from backup_sidecar.archiver import DatabaseSpec
from backup_sidecar.cpus import cpu_plan
from backup_sidecar.errors import UnknownDatabaseError, UnknownPolicyError, UsageError
from backup_sidecar.jobs.effort import Effort

if TYPE_CHECKING:  # settings (pydantic) is imported only where a Runtime is loaded
    from backup_sidecar.settings import ResolvedPaths, Settings

#: The policy of a backup asked for without one (CLI `backup`, socket `backup`).
MANUAL_POLICY = "manual"


@dataclass(frozen=True)
class OffsiteSpec:
    """The `offsite` section as plain values (the jobs open the store from it)."""

    url: str
    endpoint: str | None = None
    region: str | None = None
    path_style: bool = False
    #: Confirmed copies to keep per policy (default: the policy's local keep).
    keep: Mapping[str, int] = field(default_factory=dict)
    #: Seconds the newest confirmed copy of a policy may age (None: not watched).
    max_age: float | None = None
    #: age public keys every upload is encrypted to (empty: plaintext).
    recipients: tuple[str, ...] = ()
    #: The age identity file restores decrypt with (None: not configured).
    identity_file: Path | None = None
    #: Tries of each request (the library's backoff between them).
    attempts: int = 5
    #: Seconds the prefix's lease lasts unless renewed.
    lease_ttl: float = 300.0
    #: Seconds between scheduled offsite verifies (the newest copy of each policy).
    verify_every: float = 86400.0


@dataclass(frozen=True)
class IncrementalSpec:
    """An incremental policy's keys as plain values (jobs/incremental.py)."""

    #: quick or full: what runs in the backup's read transaction.
    check: str = "full"
    #: Seconds after a chain's first backup that the next one starts a new chain (None: never).
    rebase_after: float | None = None
    #: A new chain once the chain stored more than this fraction of the database's size.
    rebase_fraction: float | None = None
    #: Seconds the newest verified backup may age before the daemon verifies the chain's head.
    head_check_s: float = 86400.0


@dataclass(frozen=True)
class Runtime:
    """Plain fields the jobs need, mapped from the settings by the command layer."""

    backup_dir: Path
    databases: Mapping[str, DatabaseSpec]
    #: Each policy's plain `keep` count (0 for one with GFS rules only); the policies it names
    #: are the configured ones.
    keep: Mapping[str, int]
    policy_databases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: How hard the jobs work unless a caller says otherwise (callers add their callbacks).
    effort: Effort = field(default_factory=Effort)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    offsite: OffsiteSpec | None = None
    #: Policies in ``mode: incremental`` (the page store); every other policy writes archives.
    incremental: Mapping[str, IncrementalSpec] = field(default_factory=dict)
    #: Each policy's retention rules (archiver/gfs.py); a policy missing here keeps its `keep`.
    retention: Mapping[str, archiver.KeepRules] = field(default_factory=dict)
    #: The zone GFS buckets are read in (the configuration's `timezone`).
    timezone: tzinfo = UTC

    @classmethod
    def from_settings(cls, settings: Settings, paths: ResolvedPaths) -> Runtime:
        """The runtime of validated settings and their resolved paths."""
        from backup_sidecar.settings.incremental import HEAD_CHECK_DEFAULT  # noqa: PLC0415

        plan = cpu_plan(settings.cpu_threads)
        return cls(
            backup_dir=paths.backup_dir,
            databases={spec.name: spec for spec in paths.databases},
            keep={name: policy.keep or 0 for name, policy in settings.policies.items()},
            retention={name: policy.rules for name, policy in settings.policies.items()},
            timezone=settings.tzinfo,
            policy_databases={
                name: tuple(policy.databases)
                for name, policy in settings.policies.items()
                if policy.databases
            },
            effort=Effort(
                level=settings.compression_level,
                threads=plan.threads,
                pace=plan.pace,
                nice=settings.nice,
                lock_timeout=settings.lock_timeout.total_seconds(),
            ),
            offsite=_offsite_spec(settings, paths),
            incremental={
                name: IncrementalSpec(
                    check=policy.check or "full",
                    rebase_after=policy.rebase.after.total_seconds()
                    if policy.rebase and policy.rebase.after
                    else None,
                    rebase_fraction=policy.rebase.stored_fraction if policy.rebase else None,
                    head_check_s=(policy.head_check or HEAD_CHECK_DEFAULT).total_seconds(),
                )
                for name, policy in settings.policies.items()
                if policy.mode == "incremental"
            },
        )

    @classmethod
    def load(cls, config: Path | None, *, environ: Mapping[str, str], cwd: Path) -> Runtime:
        """Load the configuration file (None: defaults and environment) and resolve its paths."""
        from backup_sidecar.settings import load_settings, resolve_paths  # noqa: PLC0415

        settings = load_settings(config, environ=environ)
        return cls.from_settings(settings, resolve_paths(settings, environ=environ, cwd=cwd))

    def rules(self, policy: str) -> archiver.KeepRules | None:
        """The retention of ``policy``: its rules, else its plain keep; None when it has none."""
        if policy in self.retention:
            return self.retention[policy]
        return archiver.KeepRules(last=self.keep[policy]) if policy in self.keep else None

    def require_offsite(self) -> OffsiteSpec:
        """The offsite section, or a UsageError saying it is missing."""
        if self.offsite is None:
            raise UsageError("no offsite store configured (add an `offsite:` section with a url)")
        return self.offsite

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


def _offsite_spec(settings: Settings, paths: ResolvedPaths) -> OffsiteSpec | None:
    section = settings.offsite
    if section is None:
        return None
    encryption = section.encryption
    return OffsiteSpec(
        url=section.url,
        endpoint=section.endpoint,
        region=section.region,
        path_style=section.path_style,
        keep={name: section.keep.get(name, p.keep or 0) for name, p in settings.policies.items()},
        max_age=section.max_age_seconds(),
        recipients=tuple(encryption.recipients) if encryption else (),
        identity_file=paths.offsite_identity,
        attempts=section.attempts,
        lease_ttl=section.lease_ttl.total_seconds(),
        verify_every=section.verify_every.total_seconds(),
    )
