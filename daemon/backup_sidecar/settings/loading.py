"""YAML + injected environment -> Settings, or one ConfigError naming source, key and reason."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    SettingsError,
)
from pydantic_settings.sources.utils import parse_env_vars

from backup_sidecar.errors import ConfigError
from backup_sidecar.settings.model import DEFAULT_DATABASES, DEFAULT_POLICIES, Settings
from backup_sidecar.settings.values import ENV_PREFIX, KeyedValueError


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
