"""The configuration: YAML file + `SIDECAR_` environment, validated by pydantic at the edge.

Every nested model refuses unknown keys and is frozen. `load_settings` turns any problem into one
`ConfigError` naming the source (file or environment variable), the dotted key path and the reason.

Policies: a policy has a 5-field cron `schedule` (in `timezone`) or an `every` interval, or
neither (kept by retention, never scheduled). `pre_restore` is always present (default keep 10)
and never scheduled: restores make its archives. The policy named `drill` is special: when
scheduled, the daemon runs a restore drill on that schedule instead of a backup (it is kept here as
plain policy data; `keep: 0` is the usual value).

Relative paths (YAML, environment) are taken relative to the `cwd` given to `resolve_paths`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)
from pydantic_settings.sources.utils import parse_env_vars

from backup_sidecar.archiver.model import KNOWN_DATABASE_FILES, DatabaseSpec
from backup_sidecar.errors import ConfigError, UsageError
from backup_sidecar.scheduler import validate_cron

ENV_PREFIX = "SIDECAR_"
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_MODE = re.compile(r"0?[0-7]{3,4}")


class _KeyedValueError(ValueError):
    """A cross-field refusal that knows the key path below the model it was raised in."""

    def __init__(self, key_path: str, reason: str) -> None:
        super().__init__(f"{key_path}: {reason}")
        self.key_path = key_path
        self.reason = reason


def parse_duration(value: Any) -> Any:
    """Read "30s", "5m", "1h", "1d", "1h30m" or seconds; hand anything else to pydantic."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or like 30s, 5m, 1h, 1d")
    seconds: float | None = None
    if isinstance(value, int | float):
        seconds = value
    elif isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif _DURATION.fullmatch(text):
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
        elif not text.startswith("p"):  # ISO 8601 durations (P1D, PT30S) go on to pydantic
            raise ValueError(f"invalid duration {value!r}: use seconds or e.g. 30s, 5m, 1h, 1d")
    if seconds is None:
        return value
    try:
        return timedelta(seconds=seconds)
    except (OverflowError, ValueError):
        raise ValueError(f"duration {value!r} is out of range") from None


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be greater than 0")
    return value


def _not_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError("must be >= 0")
    return value


def _name(value: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        raise ValueError(f"invalid name {value!r}: use [a-z][a-z0-9_]{{0,31}}")
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_positive)]
NonNegativeDuration = Annotated[
    timedelta, BeforeValidator(parse_duration), AfterValidator(_not_negative)
]


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a whole number, not true/false")
    return value


def _not_empty(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty")
    return value


Name = Annotated[str, AfterValidator(_name)]
Int = Annotated[int, BeforeValidator(_not_bool)]


def _cpu_threads(value: Any) -> Any:
    """``auto``, 1 or 2 (also as environment text)."""
    if value == "auto" or (type(value) is int and value in (1, 2)):
        return value
    if isinstance(value, str) and value.strip() in ("1", "2"):
        return int(value)
    raise ValueError(f"must be auto, 1 or 2, not {value!r}")


FilePath = Annotated[Path, BeforeValidator(_not_empty)]


class DatabaseConfig(BaseModel):
    """One database; with no `path`, the path comes from the environment or the usual places."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    path: FilePath | None = None


class PolicyConfig(BaseModel):
    """Retention, and optionally when it runs: a cron `schedule` or an `every` interval."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schedule: str | None = None
    every: Duration | None = None
    keep: Int = Field(ge=0)
    databases: list[Name] | None = None

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None:
            validate_cron(value)
        return value

    @field_validator("every")
    @classmethod
    def _at_least_a_second(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(seconds=1):
            raise ValueError("must be at least 1s")
        return value

    @model_validator(mode="after")
    def _one_trigger(self) -> PolicyConfig:
        if self.schedule is not None and self.every is not None:
            raise ValueError("give either schedule or every, not both")
        return self

    @property
    def trigger(self) -> str | timedelta | None:
        """What the scheduler runs this policy by: the cron expression, the interval, or None."""
        return self.schedule if self.schedule is not None else self.every


class HealthConfig(BaseModel):
    """The health watcher; `max_backup_age` maps policy names to the oldest acceptable success."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    interval: Duration = timedelta(seconds=60)
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
        if not _MODE.fullmatch(value) or int(value, 8) > 0o777:
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


class Settings(BaseSettings):
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
    compression_level: Int = Field(default=1, ge=0, le=3)
    #: Threads for a backup's integrity check and its hashing + compression: 1 runs them one
    #: after the other, 2 at once (paced below 3 CPUs); ``auto`` is 2 from 2 usable CPUs on
    #: (backup_sidecar.cpus).
    cpu_threads: Annotated[Literal["auto", 1, 2], BeforeValidator(_cpu_threads)] = "auto"
    #: CPU niceness of backup, verify and restore work: the application's own threads keep
    #: priority over the sidecar's compression and integrity checks (0 disables).
    nice: Int = Field(default=10, ge=0, le=19)
    lock_timeout: Duration = timedelta(seconds=30)
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
        pre = value.get("pre_restore")
        if pre is None:
            return {**value, "pre_restore": PolicyConfig(**DEFAULT_POLICIES["pre_restore"])}
        if pre.trigger is not None:
            raise _KeyedValueError("pre_restore", "is never scheduled: restores make its archives")
        return value

    @model_validator(mode="after")
    def _references(self) -> Settings:
        for name, policy in self.policies.items():
            for db in policy.databases or ():
                if db not in self.databases:
                    known = ", ".join(self.databases)
                    raise _KeyedValueError(
                        f"policies.{name}.databases", f"unknown database {db!r} (known: {known})"
                    )
        for name in self.health.max_backup_age:
            if name not in self.policies:
                raise _KeyedValueError(f"health.max_backup_age.{name}", "not a policy name")
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
        """Policy name -> cron expression or interval, for the policies that run on their own."""
        return {n: p.trigger for n, p in self.policies.items() if p.trigger is not None}


# --- loading ---------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a mapping with the same key twice (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                continue  # unhashable: PyYAML reports it below
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"duplicate key {key!r} (first at line {seen[key].line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file; an empty file is an empty mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(str(path), "", f"cannot read: {reason}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(
            str(path), "", _one_line(f"{where}{exc.problem or exc.context}")
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), "", _one_line(f"invalid YAML: {exc}")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            str(path), "", f"expected a mapping of settings, got {type(data).__name__}"
        )
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(str(path), str(key), "unknown key")
    return data


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _InjectedEnvSource(EnvSettingsSource):
    """pydantic-settings' env source (prefix, `__` nesting, JSON values) over a given mapping."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        old = merged.get(key)
        both_maps = isinstance(old, Mapping) and isinstance(value, Mapping)
        merged[key] = _deep_merge(old, value) if both_maps else value  # type: ignore[arg-type]
    return merged


def _env_var_paths(environ: Mapping[str, str]) -> dict[tuple[str, ...], str]:
    """Key path -> variable name of every `SIDECAR_` variable naming a setting."""
    fields = set(Settings.model_fields)
    paths = {}
    for var in environ:
        if var.upper().startswith(ENV_PREFIX):
            path = tuple(var[len(ENV_PREFIX) :].lower().split("__"))
            if path[0] in fields:
                paths[path] = var
    return paths


_BOUNDS = {
    "greater_than_equal": ">=",
    "greater_than": ">",
    "less_than_equal": "<=",
    "less_than": "<",
}


def _to_config_error(
    exc: ValidationError, *, file: str | None, env_paths: Mapping[tuple[str, ...], str]
) -> ConfigError:
    """The first validation error as one `ConfigError`: source, dotted key path, reason.

    Unknown keys come first: a typo (`kepe`) also makes the real key look missing.
    """
    errors = exc.errors(include_url=False)
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(str(p) for p in err["loc"] if p != "[key]")
    cause = err.get("ctx", {}).get("error")
    if isinstance(cause, _KeyedValueError):
        loc, reason = (*loc, *cause.key_path.split(".")), cause.reason
    elif err["type"] == "extra_forbidden":
        reason = "unknown key"
    elif err["type"] in _BOUNDS:
        reason = f"must be {_BOUNDS[err['type']]} {next(iter(err.get('ctx', {}).values()), '')}"
    else:
        reason = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    # The variable that set the failing value, else one that set something below it.
    culprits = [var for path, var in env_paths.items() if loc[: len(path)] == path]
    culprits += [var for path, var in env_paths.items() if path[: len(loc)] == loc]
    source = f"environment {culprits[0]}" if culprits else (file or "environment")
    return ConfigError(source, ".".join(loc), reason)


def load_settings(path: Path | None, *, environ: Mapping[str, str]) -> Settings:
    """Read the YAML file (if any), apply `SIDECAR_*` overrides from `environ`, validate.

    The file's `databases` and `policies` replace the defaults as a whole; environment variables
    override single keys on top (`SIDECAR_POLICIES__DAILY__KEEP=3`).
    """
    file = str(path) if path is not None else None
    data = _read_yaml(path) if path is not None else {}
    try:
        env_data = _InjectedEnvSource(Settings, environ)()
    except SettingsError as exc:  # a complex value (e.g. SIDECAR_POLICIES) that is not JSON
        field = re.search(r'field "(\w+)"', str(exc))
        key = field.group(1) if field else ""
        raise ConfigError(f"environment {ENV_PREFIX}{key.upper()}", key, "invalid JSON") from None
    seeded = {"databases": DEFAULT_DATABASES, "policies": DEFAULT_POLICIES, **data}
    merged = _deep_merge(seeded, env_data)
    try:
        return Settings(**merged)
    except ValidationError as exc:
        raise _to_config_error(exc, file=file, env_paths=_env_var_paths(environ)) from None


# --- paths -----------------------------------------------------------------------------------

DOCKER_ROOT = Path("/app")


@dataclass(frozen=True)
class ResolvedPaths:
    """Where things live, and which rule chose each path (`sources`, for the start-up log)."""

    backup_dir: Path
    databases: tuple[DatabaseSpec, ...]
    sources: dict[str, str]

    def database(self, name: str) -> DatabaseSpec:
        """The spec of one configured database."""
        for spec in self.databases:
            if spec.name == name:
                return spec
        raise UsageError(f"unknown database {name!r}")


def database_file_name(name: str) -> str:
    """The file name of a database: the seed's names for arrow/user, else `<name>.db`."""
    return KNOWN_DATABASE_FILES.get(name, f"{name}.db")


def _resolve_database(
    name: str, config: DatabaseConfig, *, environ: Mapping[str, str], cwd: Path,
    exists: Callable[[Path], bool],
) -> tuple[Path, str]:  # fmt: skip
    var = f"{name.upper()}_DATABASE_PATH"
    file = database_file_name(name)
    docker = DOCKER_ROOT / f"{name}_data" / file
    if environ.get(var):
        return cwd / environ[var], f"environment {var}"
    if config.path is not None:
        return cwd / config.path, f"config databases.{name}.path"
    if exists(docker.parent):
        return docker, f"docker volume {docker.parent}"
    return cwd / "databases" / file, "local fallback"


def resolve_paths(
    settings: Settings,
    *,
    environ: Mapping[str, str],
    cwd: Path,
    exists: Callable[[Path], bool] = Path.exists,
) -> ResolvedPaths:
    """Apply the DESIGN's order: environment, YAML, Docker volume (if present), local fallback."""
    sources: dict[str, str] = {}
    specs = []
    for name, config in settings.databases.items():
        path, sources[f"databases.{name}"] = _resolve_database(
            name, config, environ=environ, cwd=cwd, exists=exists
        )
        specs.append(DatabaseSpec(name=name, path=path))
    if environ.get("BACKUP_DIR"):
        backup_dir, sources["backup_dir"] = cwd / environ["BACKUP_DIR"], "environment BACKUP_DIR"
    elif settings.backup_dir is not None:
        backup_dir, sources["backup_dir"] = cwd / settings.backup_dir, "config backup_dir"
    elif exists(DOCKER_ROOT):
        backup_dir, sources["backup_dir"] = DOCKER_ROOT / "backups", f"docker {DOCKER_ROOT}"
    else:
        backup_dir, sources["backup_dir"] = cwd / "backups", "local fallback"
    return ResolvedPaths(backup_dir=backup_dir, databases=tuple(specs), sources=sources)


class RuntimeConfig(NamedTuple):
    """What the CLI needs to start anything: the settings and the resolved paths."""

    settings: Settings
    paths: ResolvedPaths


def build_runtime_config(
    config_path: Path | None,
    *,
    environ: Mapping[str, str],
    cwd: Path,
    exists: Callable[[Path], bool] = Path.exists,
) -> RuntimeConfig:
    """Load and resolve everything; with no `config_path`, `$SIDECAR_CONFIG` names the file."""
    if config_path is None and environ.get("SIDECAR_CONFIG"):
        config_path = cwd / environ["SIDECAR_CONFIG"]
    settings = load_settings(config_path, environ=environ)
    return RuntimeConfig(settings, resolve_paths(settings, environ=environ, cwd=cwd, exists=exists))
