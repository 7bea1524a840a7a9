"""The configuration's models: databases, policies, health, metrics, control, and Settings."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from backup_sidecar.archiver.manifest import database_member_problem
from backup_sidecar.cron import validate_cron
from backup_sidecar.errors import KeyedValueError, UsageError
from backup_sidecar.settings.incremental import Check, Mode, RebaseConfig, check_incremental_keys
from backup_sidecar.settings.maintenance import MaintenanceSection
from backup_sidecar.settings.notify import NotifyConfig
from backup_sidecar.settings.offsite import OffsiteConfig, check_offsite_policies
from backup_sidecar.settings.retention import RetentionConfig, check_offsite_keep
from backup_sidecar.settings.ui import UiConfig
from backup_sidecar.settings.values import (
    ENV_PREFIX,
    MODE_PATTERN,
    Duration,
    FilePath,
    Int,
    Name,
    NonNegativeDuration,
    at_least,
    at_most,
    parse_cpu_threads,
)


class DatabaseConfig(BaseModel):
    """One database; with no `path`, the path comes from the environment or the usual places.
    `member` names its file inside archives (default: the seed's name for arrow/user, else the
    file's own name)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    path: FilePath | None = None
    member: str | None = None

    @field_validator("member")
    @classmethod
    def _member(cls, value: str | None) -> str | None:
        if value is not None and (problem := database_member_problem(value)):
            raise ValueError(f"{value!r} {problem}")
        return value


class _Timing(BaseModel):
    """When something runs on its own: a cron `schedule` or an `every` interval (or never)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schedule: str | None = None
    every: Annotated[Duration | None, at_least(timedelta(seconds=1), "1s")] = None

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None:
            validate_cron(value)
        return value

    @model_validator(mode="after")
    def _one_trigger(self) -> _Timing:
        if self.schedule is not None and self.every is not None:
            raise ValueError("give either schedule or every, not both")
        return self

    @property
    def trigger(self) -> str | timedelta | None:
        """What the scheduler runs this by: the cron expression, the interval, or None."""
        return self.schedule if self.schedule is not None else self.every


class PolicyConfig(_Timing, RetentionConfig):
    """Retention (`keep` and/or GFS rules, retention.py), when it runs (a cron `schedule` or an
    `every` interval), and its mode."""

    databases: list[Name] | None = None
    mode: Mode = "full"
    check: Check | None = None  # default: full, what full archives run
    rebase: RebaseConfig | None = None
    head_check: Duration | None = None  # incremental: default 1d (settings/incremental.py)

    @model_validator(mode="after")
    def _incremental(self) -> PolicyConfig:
        check_incremental_keys(self.mode, self.check, self.rebase, self.head_check)
        return self


class ScrubConfig(_Timing):
    """The scrub: every archive read to its end on this schedule, failures marked damaged.
    Neither `schedule` nor `every` (the default): no scheduled scrub (`backup-sidecar scrub`
    and the socket's `scrub` still run one)."""


#: The scheduler job of the scrub; a policy may not take this name.
SCRUB_JOB = "scrub"


class HealthConfig(BaseModel):
    """The health watcher; `max_backup_age` maps policy names to the oldest acceptable success."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: At least 1s: each check opens every database and lists the backup directory.
    interval: Annotated[Duration, at_least(timedelta(seconds=1), "1s")] = timedelta(seconds=60)
    quick_check: bool = True
    max_backup_age: dict[str, Duration] = Field(default_factory=dict)
    #: How long a database whose file and -wal have not changed goes without a new check
    #: (a check of an idle 1 GiB database costs over a CPU-second); 0 checks every interval.
    recheck_unchanged: NonNegativeDuration = timedelta(hours=1)


class MetricsConfig(BaseModel):
    """The Prometheus endpoint; port 0 binds any free port (tests)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    host: str = Field(default="0.0.0.0", min_length=1)  # noqa: S104 - a sidecar is scraped from outside
    port: Int = Field(default=9464, ge=0, le=65535)


class ControlConfig(BaseModel):
    """The control socket; `mode` is an octal string such as "0660" (quote it in YAML)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    socket: FilePath = Path("/run/backup-sidecar/control.sock")
    mode: str = "0660"

    @field_validator("mode", mode="before")
    @classmethod
    def _octal(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError('must be a quoted octal string such as "0660"')
        if not MODE_PATTERN.fullmatch(value) or int(value, 8) > 0o777:
            raise ValueError(f'invalid mode {value!r}: use an octal string such as "0660"')
        return value

    @property
    def mode_bits(self) -> int:
        """The permission bits to chmod the socket to."""
        return int(self.mode, 8)


def _none_is_empty(value: Any) -> Any:
    """`arrow:` with nothing after it in YAML means "all defaults"."""
    if isinstance(value, dict):
        return {k: ({} if v is None else v) for k, v in value.items()}
    return value


DEFAULT_DATABASES: dict[str, Any] = {"arrow": {}, "user": {}}
DEFAULT_POLICIES: dict[str, Any] = {
    "daily": {"schedule": "0 3 * * *", "keep": 7},
    "weekly": {"schedule": "30 3 * * 0", "keep": 4},
    "pre_restore": {"keep": 10},
}
DEFAULT_MAX_BACKUP_AGE: dict[str, str] = {"daily": "26h", "weekly": "8d"}


class Settings(MaintenanceSection, BaseSettings):
    """The whole configuration. Build it with `load_settings`, which injects the environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    backup_dir: FilePath | None = None
    timezone: str = "UTC"
    databases: Annotated[dict[Name, DatabaseConfig], BeforeValidator(_none_is_empty)] = Field(
        default_factory=lambda: {k: DatabaseConfig() for k in DEFAULT_DATABASES}
    )
    policies: Annotated[dict[Name, PolicyConfig], BeforeValidator(_none_is_empty)] = Field(
        default_factory=lambda: {k: PolicyConfig(**v) for k, v in DEFAULT_POLICIES.items()}
    )
    health: HealthConfig = Field(default_factory=HealthConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    ui: UiConfig = Field(default_factory=UiConfig)
    scrub: ScrubConfig = Field(default_factory=ScrubConfig)
    offsite: OffsiteConfig | None = None
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    compression_level: Int = Field(default=1, ge=0, le=3)
    #: Threads for a backup's integrity check and its hashing + compression: 1 runs them one
    #: after the other, 2 at once (paced below 3 CPUs); ``auto`` is 2 from 2 usable CPUs on
    #: (backup_sidecar.cpus).
    cpu_threads: Annotated[Literal["auto", 1, 2], BeforeValidator(parse_cpu_threads)] = "auto"
    #: CPU niceness of backup, verify and restore work: the application's own threads keep
    #: priority over the sidecar's compression and integrity checks (0 disables).
    nice: Int = Field(default=10, ge=0, le=19)
    #: At most 1d: SQLite's busy timeout is a 32-bit count of milliseconds (24.8 days), and a
    #: longer one silently became no wait at all.
    lock_timeout: Annotated[Duration, at_most(timedelta(days=1), "1d", "SQLite's busy timeout")] = (
        timedelta(seconds=30)
    )
    grace_period: NonNegativeDuration = timedelta(seconds=60)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only init values: `load_settings` merges file and injected environment itself."""
        return (init_settings,)

    @model_validator(mode="before")
    @classmethod
    def _default_max_backup_age(cls, data: Any) -> Any:
        """Without an explicit `max_backup_age`, watch the default policies that exist."""
        if not isinstance(data, dict):
            return data
        health = data.get("health", {})
        policies = data.get("policies", DEFAULT_POLICIES)
        if isinstance(health, dict) and "max_backup_age" not in health:
            names = policies if isinstance(policies, dict) else {}
            ages = {k: v for k, v in DEFAULT_MAX_BACKUP_AGE.items() if k in names}
            data = {**data, "health": {**health, "max_backup_age": ages}}
        return data

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: absurd names
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name such as UTC or Europe/Berlin)"
            ) from None
        return value

    @field_validator("policies")
    @classmethod
    def _pre_restore(cls, value: dict[str, PolicyConfig]) -> dict[str, PolicyConfig]:
        if SCRUB_JOB in value:
            raise KeyedValueError(
                SCRUB_JOB, "is reserved: schedule the scrub with the top-level `scrub:` key"
            )
        pre = value.get("pre_restore")
        if pre is None:
            return {**value, "pre_restore": PolicyConfig(**DEFAULT_POLICIES["pre_restore"])}
        if pre.trigger is not None or pre.mode != "full":
            raise KeyedValueError("pre_restore", "is never scheduled nor incremental")
        return value

    @model_validator(mode="after")
    def _references(self) -> Settings:
        for name, policy in self.policies.items():
            for db in policy.databases or ():
                if db not in self.databases:
                    known = ", ".join(self.databases)
                    raise KeyedValueError(
                        f"policies.{name}.databases", f"unknown database {db!r} (known: {known})"
                    )
        for name in self.health.max_backup_age:
            if name not in self.policies:
                raise KeyedValueError(f"health.max_backup_age.{name}", "not a policy name")
        check_offsite_policies(self.offsite, self.policies)
        check_offsite_keep(self.offsite.keep if self.offsite else None, self.policies)
        return self

    @property
    def tzinfo(self) -> ZoneInfo:
        """The zone that cron schedules are read in."""
        return ZoneInfo(self.timezone)

    def policy_databases(self, policy: str) -> list[str]:
        """The databases a policy backs up: its own list, or every configured database."""
        try:
            chosen = self.policies[policy].databases
        except KeyError:
            raise UsageError(
                f"unknown policy {policy!r} (known: {', '.join(self.policies)})"
            ) from None
        return list(chosen) if chosen is not None else list(self.databases)

    def scheduled_policies(self) -> dict[str, str | timedelta]:
        """Job name -> cron expression or interval, for the policies that run on their own and
        the scrub (job `scrub`) when it is scheduled."""
        jobs = {n: p.trigger for n, p in self.policies.items() if p.trigger is not None}
        if self.scrub.trigger is not None:
            jobs[SCRUB_JOB] = self.scrub.trigger
        return jobs
