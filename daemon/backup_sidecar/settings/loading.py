"""YAML + injected environment -> Settings, or one ConfigError naming source, key and reason."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsError
from pydantic_settings.sources.utils import parse_env_vars

from backup_sidecar.errors import ConfigError, KeyedValueError, SidecarError
from backup_sidecar.settings.model import DEFAULT_DATABASES, DEFAULT_POLICIES, Settings
from backup_sidecar.settings.values import ENV_PREFIX
from backup_sidecar.settings.yamlfile import one_line, read_yaml


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
    exc: ValidationError,
    *,
    file: str | None,
    env_paths: Mapping[tuple[str, ...], str],
    file_data: Mapping[str, Any],
) -> ConfigError:
    """The first validation error as one `ConfigError`: source, dotted key path, reason.

    Unknown keys come first: a typo (`kepe`) also makes the real key look missing.
    """
    errors = exc.errors(include_url=False)
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(str(p) for p in err["loc"] if p != "[key]")
    cause = err.get("ctx", {}).get("error")
    if isinstance(cause, KeyedValueError):
        loc, reason = (*loc, *cause.key_path.split(".")), cause.reason
    elif err["type"] == "extra_forbidden":
        reason = "unknown key"
    elif err["type"] in _BOUNDS:
        reason = f"must be {_BOUNDS[err['type']]} {next(iter(err.get('ctx', {}).values()), '')}"
    else:
        reason = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    # The variable that set the failing value, else one that set something below it.
    culprits = [var for path, var in env_paths.items() if loc[: len(path)] == path]
    # A section only the environment made (`SIDECAR_POLICIES__X__EVERY` for a policy `x` the
    # file lacks): its variable, not the file, is missing the key.
    made = loc[: _depth_in(file_data, loc) + 1]
    culprits += [var for path, var in env_paths.items() if path[: len(made)] == made]
    culprits += [var for path, var in env_paths.items() if path[: len(loc)] == loc]
    source = f"environment {culprits[0]}" if culprits else (file or "environment")
    return ConfigError(source, ".".join(loc), reason)


def _depth_in(data: Mapping[str, Any], loc: tuple[str, ...]) -> int:
    """How many leading keys of `loc` the (file and default) data holds."""
    depth = 0
    node: Any = data
    for key in loc:
        if not isinstance(node, Mapping) or key not in node:
            break
        node, depth = node[key], depth + 1
    return depth


def load_settings(path: Path | None, *, environ: Mapping[str, str]) -> Settings:
    """Read the YAML file (if any), apply `SIDECAR_*` overrides from `environ`, validate.

    The file's `databases` and `policies` replace the defaults as a whole; environment variables
    override single keys on top (`SIDECAR_POLICIES__DAILY__KEEP=3`). Any failure, even a
    Python error from a hostile value, is one `ConfigError`: a reload must never crash.
    """
    try:
        return _load_settings(path, environ=environ)
    except SidecarError:
        raise
    except (RecursionError, MemoryError, ValueError, OverflowError, TypeError) as exc:
        source = str(path) if path is not None else "environment"
        reason = one_line(str(exc))[:200] or type(exc).__name__
        raise ConfigError(source, "", f"cannot be read as a configuration: {reason}") from None


def _load_settings(path: Path | None, *, environ: Mapping[str, str]) -> Settings:
    file = str(path) if path is not None else None
    data = read_yaml(path) if path is not None else {}
    try:
        env_data = _InjectedEnvSource(Settings, environ)()
    except SettingsError as exc:  # a complex value (e.g. SIDECAR_POLICIES) that is not JSON
        field = re.search(r'field "(\w+)"', str(exc))
        key = field.group(1) if field else ""
        raise ConfigError(f"environment {ENV_PREFIX}{key.upper()}", key, "invalid JSON") from None
    except RecursionError:  # a JSON value `[[[[...` thousands deep
        json_vars = [
            v for v in environ if v.upper().startswith(ENV_PREFIX) and environ[v][:1] in "[{"
        ]
        source = f"environment {json_vars[0]}" if json_vars else "environment"
        raise ConfigError(source, "", "invalid JSON: nested too deeply") from None
    seeded = {"databases": DEFAULT_DATABASES, "policies": DEFAULT_POLICIES, **data}
    merged = _deep_merge(seeded, env_data)
    try:
        return Settings(**merged)
    except ValidationError as exc:
        env_paths = _env_var_paths(environ)
        raise _to_config_error(exc, file=file, env_paths=env_paths, file_data=seeded) from None
