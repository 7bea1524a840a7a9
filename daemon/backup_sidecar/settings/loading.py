"""YAML + injected environment -> Settings, or one ConfigError naming source, key and reason."""

from __future__ import annotations

import os
import re
import stat
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

from backup_sidecar.archiver.safefs import file_kind
from backup_sidecar.errors import ConfigError, KeyedValueError, SidecarError
from backup_sidecar.settings.model import DEFAULT_DATABASES, DEFAULT_POLICIES, Settings
from backup_sidecar.settings.values import ENV_PREFIX

#: The largest configuration file read: a real one is a few kB; a bigger file is refused
#: before it is parsed (PyYAML holds several objects per character of it).
MAX_CONFIG_BYTES = 1024 * 1024
#: The deepest nesting of YAML collections accepted: a real file nests 4 levels; PyYAML's
#: composer recurses once per level, so `[[[[...` 50,000 deep was a RecursionError.
MAX_NESTING = 64
#: The longest integer accepted (a 64-bit value has at most 19 digits): Python refuses to
#: convert one of over 4,300 digits with a ValueError.
_MAX_INT_CHARS = 40
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class _KeyedYAMLError(yaml.MarkedYAMLError):
    """A refusal of the loader below that knows the key path of the node at fault."""

    def __init__(self, key_path: tuple[str, ...], problem: str, mark: yaml.Mark) -> None:
        super().__init__(problem=problem, problem_mark=mark)
        shown = [part if len(part) <= 40 else f"{part[:37]}..." for part in key_path]
        self.key_path = ".".join(shown if len(shown) <= 8 else [*shown[:4], "..."])


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a mapping with the same key twice (PyYAML keeps the last),
    nesting deeper than `MAX_NESTING`, an absurdly long integer, and any value PyYAML's own
    constructors fail on with a Python error (e.g. `2001-13-45`): each as a marked YAML error."""

    _path: tuple[str, ...] = ()
    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        outer = self._path
        self._depth += 1
        if isinstance(index, yaml.ScalarNode):  # the value of a mapping's key
            self._path = (*outer, str(index.value))
        elif isinstance(index, int):  # a sequence item
            self._path = (*outer, str(index))
        try:
            if self._depth > MAX_NESTING:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise _KeyedYAMLError(self._path, f"nested deeper than {MAX_NESTING} levels", mark)
            node = super().compose_node(parent, index)
            if node is not None:
                setattr(node, "key_path", self._path)  # noqa: B010 - read in construct_object
            return node
        finally:
            self._path = outer
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        key_path = getattr(node, "key_path", ())
        is_int = isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:int"
        if is_int and (size := len(str(node.value))) > _MAX_INT_CHARS:
            reason = f"integer of {size} characters is out of range"
            raise _KeyedYAMLError(key_path, reason, node.start_mark)
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError, TypeError) as exc:
            reason = f"invalid value: {_one_line(str(exc))[:200]}"
            raise _KeyedYAMLError(key_path, reason, node.start_mark) from None

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


def _read_text(path: Path) -> str:
    """The text of the regular file at `path` (links followed), at most `MAX_CONFIG_BYTES`.

    Opened non-blocking: a FIFO is refused at once instead of waiting for a writer."""
    label = str(path)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:  # ENXIO: a socket cannot be opened at all
        kind = _kind_at(path)
        reason = f"is {kind}, not a regular file" if kind else f"cannot read: {exc.strerror}"
        raise ConfigError(label, "", reason) from None
    except ValueError:
        raise ConfigError(label, "", "cannot read: the path holds a NUL byte") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(label, "", f"is {file_kind(mode)}, not a regular file")
        data = b""
        while len(data) <= MAX_CONFIG_BYTES and (chunk := os.read(fd, MAX_CONFIG_BYTES + 1)):
            data += chunk
    except OSError as exc:
        raise ConfigError(label, "", f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        limit = f"{MAX_CONFIG_BYTES // 1024 // 1024} MiB"
        raise ConfigError(label, "", f"is larger than {limit}; not a configuration file, not read")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        reason = f"is not valid UTF-8: byte {exc.start} (line {line}) is 0x{data[exc.start]:02x}"
        raise ConfigError(label, "", reason) from None


def _kind_at(path: Path) -> str:
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return ""
    return "" if stat.S_ISREG(mode) else file_kind(mode)


def _read_yaml(path: Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file; an empty file is an empty mapping."""
    text = _read_text(path)
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        key_path = getattr(exc, "key_path", "")
        raise ConfigError(
            str(path), key_path, _one_line(f"{where}{exc.problem or exc.context}")
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
        reason = _one_line(str(exc))[:200] or type(exc).__name__
        raise ConfigError(source, "", f"cannot be read as a configuration: {reason}") from None


def _load_settings(path: Path | None, *, environ: Mapping[str, str]) -> Settings:
    file = str(path) if path is not None else None
    data = _read_yaml(path) if path is not None else {}
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
