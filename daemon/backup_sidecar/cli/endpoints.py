"""Where the daemon listens, read cheaply for the commands that must start at once.

`healthcheck` (the container's HEALTHCHECK, every 30 s) and `ctl ping` need only the metrics
host and port or the control socket. Validating the whole configuration imports pydantic,
pydantic-settings and every model: more than the whole command is allowed to take. So these
read the one key from the `SIDECAR_*` environment or the YAML file, and take it only when it
is a plain value of the right type; anything else (a JSON section in the environment, a file
that does not parse, an odd value) returns None, and the caller loads the validated
configuration as every other command does, which names the fault.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final

#: As settings/values.py ENV_PREFIX (not imported: that package is what this avoids).
_ENV_PREFIX: Final = "SIDECAR_"
#: Files larger than this are left to the validated loader (which refuses them).
_MAX_BYTES: Final = 1024 * 1024
#: The defaults of settings/model.py MetricsConfig and ControlConfig (tests check they agree).
DEFAULT_METRICS_HOST: Final = "0.0.0.0"  # noqa: S104 - as the model's default
DEFAULT_METRICS_PORT: Final = 9464
DEFAULT_CONTROL_SOCKET: Final = Path("/run/backup-sidecar/control.sock")


class _UnsureError(Exception):
    """The cheap reading cannot tell: load the validated configuration."""


def _file_value(config: Path, section: str, key: str) -> object:
    """The key's value in the YAML file (None: not given): read by cli/plainyaml.py when the
    file is in its plain subset (PyYAML is a fifth of the start-up), else by PyYAML."""
    try:
        fd = os.open(config, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        raise _UnsureError from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_BYTES:
            raise _UnsureError
        with os.fdopen(os.dup(fd), "rb") as file:
            raw = file.read(_MAX_BYTES + 1)
    finally:
        os.close(fd)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _UnsureError from None
    from backup_sidecar.cli import plainyaml  # noqa: PLC0415

    found = plainyaml.value(text, section, key)
    return _pyyaml_value(text, section, key) if found is plainyaml.UNSURE else found


def _pyyaml_value(text: str, section: str, key: str) -> object:
    import yaml  # noqa: PLC0415 (only for a file outside the plain subset)

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        # PyYAML keeps the last of a duplicate key; the validated loader refuses the file
        node = yaml.compose(text, Loader=loader)
        if node is not None and _has_duplicate_key(node, loader):
            raise _UnsureError
        data = yaml.load(text, Loader=loader)  # noqa: S506 (a safe loader)
    except (yaml.YAMLError, RecursionError, ValueError, TypeError):
        raise _UnsureError from None
    if data is None:
        return None
    if not isinstance(data, dict):
        raise _UnsureError
    part = data.get(section, {})
    if not isinstance(part, dict):
        raise _UnsureError
    return part.get(key)


def _has_duplicate_key(root: object, loader: type) -> bool:
    """Whether any mapping under ``root`` (a composed node) holds a key twice, as the
    validated loader (settings/yamlfile.py) compares keys: by their constructed value."""
    import yaml  # noqa: PLC0415

    constructor = loader("")
    stack, seen_nodes = [root], set()
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:  # an alias: already looked at
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys = set()
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and not key_node.tag.endswith(":merge"):
                    key = constructor.construct_object(key_node, deep=True)
                    if key in keys:
                        return True
                    keys.add(key)
                stack += [key_node, value_node]
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value
    return False


def _raw(config: Path | None, environ: Mapping[str, str], section: str, key: str) -> object:
    """The key's value as given (None: not given), environment first as in load_settings.
    A named file is read even when the environment gives the key: a missing or broken file
    must fail the command naming it, as the validated loader does."""
    from_file = None if config is None else _file_value(config, section, key)
    env = {name.upper(): value for name, value in environ.items()}
    whole = f"{_ENV_PREFIX}{section.upper()}"
    if whole in env:  # a JSON value for the whole section
        raise _UnsureError
    if f"{whole}__{key.upper()}" in env:
        return env[f"{whole}__{key.upper()}"]
    return from_file


def healthz_url(config: Path | None, environ: Mapping[str, str]) -> str | None:
    """The configured metrics endpoint's /healthz, asked on loopback when it listens on all."""
    try:
        host = _raw(config, environ, "metrics", "host")
        port = _raw(config, environ, "metrics", "port")
    except _UnsureError:
        return None
    host = DEFAULT_METRICS_HOST if host is None else host
    port = DEFAULT_METRICS_PORT if port is None else port
    if isinstance(port, str) and port.strip().isdigit():
        port = int(port)
    if not isinstance(host, str) or not host or type(port) is not int or not 0 <= port <= 65535:
        return None
    return url_of(host, port)


#: The strings pydantic takes for a bool (lower-cased), as the validated loader reads them.
_TRUE: Final = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE: Final = frozenset({"0", "off", "f", "false", "n", "no"})


def _enabled(config: Path | None, environ: Mapping[str, str], section: str) -> bool | None:
    """Whether ``section`` (metrics, control) is enabled (default: yes); None: unsure."""
    try:
        value = _raw(config, environ, section, "enabled")
    except _UnsureError:
        return None
    if value is None or type(value) is bool:
        return value is None or value
    if type(value) is int and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    return None


def health_target(config: Path | None, environ: Mapping[str, str]) -> str | Path | None:
    """What `healthcheck` asks: the /healthz URL (a str) while the metrics endpoint is
    enabled, else the control socket (a Path); "" when neither is enabled; None: unsure."""
    metrics = _enabled(config, environ, "metrics")
    if metrics:
        return healthz_url(config, environ)
    if metrics is None or (control := _enabled(config, environ, "control")) is None:
        return None
    return control_socket(config, environ) if control else ""


def url_of(host: str, port: int) -> str:
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104
    host = "[::1]" if host == "::" else f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/healthz"


def control_socket(config: Path | None, environ: Mapping[str, str]) -> Path | None:
    """The configured control socket's path."""
    try:
        value = _raw(config, environ, "control", "socket")
    except _UnsureError:
        return None
    if value is None:
        return DEFAULT_CONTROL_SOCKET
    if not isinstance(value, str) or not value.strip():
        return None
    return Path(value)
