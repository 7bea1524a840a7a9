"""Where the backups and each database live: YAML, environment, Docker volumes, defaults."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from backup_sidecar.archiver.model import KNOWN_DATABASE_FILES, DatabaseSpec
from backup_sidecar.errors import UsageError
from backup_sidecar.settings.loading import load_settings
from backup_sidecar.settings.model import DatabaseConfig, Settings

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
