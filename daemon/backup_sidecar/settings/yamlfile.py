"""The configuration file: read bounded from a regular file, parsed by a strict YAML loader.

Every refusal is one `ConfigError` naming the file (and, where known, the key path): a FIFO,
a device, an oversized or non-UTF-8 file, a duplicate key, nesting too deep, an absurd integer.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from backup_sidecar.archiver.safefs import file_kind
from backup_sidecar.errors import ConfigError

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
            reason = f"invalid value: {one_line(str(exc))[:200]}"
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


def read_yaml(path: Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file; an empty file is an empty mapping."""
    text = _read_text(path)
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        key_path = getattr(exc, "key_path", "")
        raise ConfigError(
            str(path), key_path, one_line(f"{where}{exc.problem or exc.context}")
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), "", one_line(f"invalid YAML: {exc}")) from None
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


def one_line(text: str) -> str:
    """`text` with every run of whitespace (newlines too) as one space."""
    return " ".join(text.split())
