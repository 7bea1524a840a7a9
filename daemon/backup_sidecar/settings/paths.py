"""Where the backups and each database live: YAML, environment, Docker volumes, defaults."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from backup_sidecar.archiver.manifest import database_member_problem
from backup_sidecar.archiver.model import DatabaseSpec
from backup_sidecar.archiver.seedfiles import KNOWN_DATABASE_FILES
from backup_sidecar.errors import ConfigError, UsageError
from backup_sidecar.settings.loading import load_settings
from backup_sidecar.settings.model import DatabaseConfig, Settings

DOCKER_ROOT = Path("/app")


@dataclass(frozen=True)
class ResolvedPaths:
    """Where things live, and which rule chose each path (`sources`, for the start-up log)."""

    backup_dir: Path
    databases: tuple[DatabaseSpec, ...]
    sources: dict[str, str]
    #: The age identity file of `offsite.encryption.identity_file` (relative to the cwd).
    offsite_identity: Path | None = None

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
    config_file: Path | None = None,
) -> ResolvedPaths:
    """Apply the DESIGN's order: environment, YAML, Docker volume (if present), local fallback.

    Refuses a database whose member name an archive cannot hold, and two databases that would
    be archived under one member name (`config_file` is named in the error)."""
    sources: dict[str, str] = {}
    specs = []
    for name, config in settings.databases.items():
        path, sources[f"databases.{name}"] = _resolve_database(
            name, config, environ=environ, cwd=cwd, exists=exists
        )
        specs.append(DatabaseSpec(name=name, path=path, member=config.member or ""))
    _check_members(specs, sources, config_file=config_file)
    if environ.get("BACKUP_DIR"):
        backup_dir, sources["backup_dir"] = cwd / environ["BACKUP_DIR"], "environment BACKUP_DIR"
    elif settings.backup_dir is not None:
        backup_dir, sources["backup_dir"] = cwd / settings.backup_dir, "config backup_dir"
    elif exists(DOCKER_ROOT):
        backup_dir, sources["backup_dir"] = DOCKER_ROOT / "backups", f"docker {DOCKER_ROOT}"
    else:
        backup_dir, sources["backup_dir"] = cwd / "backups", "local fallback"
    encryption = settings.offsite.encryption if settings.offsite else None
    identity = encryption.identity_file if encryption else None
    return ResolvedPaths(
        backup_dir=backup_dir,
        databases=tuple(specs),
        sources=sources,
        offsite_identity=cwd / identity if identity is not None else None,
    )


def _check_members(
    specs: list[DatabaseSpec], sources: Mapping[str, str], *, config_file: Path | None
) -> None:
    seen: dict[str, DatabaseSpec] = {}
    for spec in specs:
        rule = sources[f"databases.{spec.name}"]
        source = rule if rule.startswith("environment") else str(config_file or "configuration")
        if problem := database_member_problem(spec.member):
            raise ConfigError(
                source,
                f"databases.{spec.name}.path",
                f"file name {spec.member!r} cannot be an archive member: it {problem} "
                f"(rename the file, or set databases.{spec.name}.member)",
            )
        other = seen.setdefault(spec.member, spec)
        if other is not spec:
            raise ConfigError(
                source,
                f"databases.{other.name} and databases.{spec.name}",
                f"both would be archived as {spec.member!r} ({other.path}, {spec.path}); "
                f"set databases.{spec.name}.member to another file name",
            )


class Configuration(NamedTuple):
    """The loaded configuration: the settings and their resolved paths (what the daemon starts
    from; `jobs.Runtime.from_settings` maps it to what the jobs take)."""

    settings: Settings
    paths: ResolvedPaths


def load_configuration(
    config_path: Path | None,
    *,
    environ: Mapping[str, str],
    cwd: Path,
    exists: Callable[[Path], bool] = Path.exists,
) -> Configuration:
    """Load and resolve everything; with no `config_path`, `$SIDECAR_CONFIG` names the file."""
    if config_path is None and environ.get("SIDECAR_CONFIG"):
        config_path = cwd / environ["SIDECAR_CONFIG"]
    settings = load_settings(config_path, environ=environ)
    paths = resolve_paths(
        settings, environ=environ, cwd=cwd, exists=exists, config_file=config_path
    )
    return Configuration(settings, paths)
