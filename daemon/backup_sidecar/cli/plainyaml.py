"""One value of a configuration file read without PyYAML, for the commands that must start at
once (`healthcheck`, `ctl ping`): importing PyYAML is a fifth of their whole start-up.

Only a plain subset of YAML is read: block mappings and sequences indented with spaces, flow
mappings and sequences on one line, plain scalars, single- and double-quoted scalars without
escapes, comments. The whole document must be in that subset, and the value must be a
string, a boolean or a decimal integer that no other YAML 1.1 type could claim; anything
else (anchors, tags, block scalars, multi-line values, duplicate keys (block or flow, and
keys PyYAML would read as another type: `on` and `yes` are one key), a tab, a document
marker, a plain scalar PyYAML would read as a float, null or date...) returns `UNSURE`, and
the caller parses the file with PyYAML (refusing duplicate keys as the validated loader
does). So a value read here is the one the validated loader reads (a property test compares
the two on generated documents).
"""

from __future__ import annotations

import re
from typing import Final, TypeAlias

#: Anything but a line feed and printable ASCII: each is looked at by `_odd`. (A character
#: class of the Unicode ranges YAML allows costs 10 ms to compile, half this reader's budget.)
_NOT_ASCII: Final = re.compile("[^\n\x20-\x7e]")
_KEY: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_\-]*):(?= |$)")
#: PyYAML's implicit resolvers (yaml/resolver.py) for a plain scalar that is not a string,
#: compiled only for a value they might match (the first characters they are registered for,
#: at most one dot): 0.5 ms, a fortieth of the budget.
_NOT_STR: Final = r"""^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF
    |[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN)
    |[-+]?0b[0-1_]+
    |[-+]?0[0-7_]+
    |[-+]?(?:0|[1-9][0-9_]*)
    |[-+]?0x[0-9a-fA-F_]+
    |[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+
    |~|null|Null|NULL)$"""
_NOT_STR_FIRST: Final = "yYnNtTfFoO-+0123456789.<~=!&*"
_DECIMAL: Final = re.compile(r"0|[1-9][0-9]{0,18}")
#: PyYAML's booleans (YAML 1.1), read as it reads them (`metrics.enabled`).
_BOOLS: Final = {
    word: truth
    for words, truth in (("yes true on", True), ("no false off", False))
    for base in words.split()
    for word in (base, base.capitalize(), base.upper())
}
#: The longest plain scalar read (PyYAML cannot make an int of over 4,300 digits).
_MAX_PLAIN: Final = 1000
#: Characters a plain scalar may not start with (YAML indicators), and that end one in a flow.
_INDICATORS: Final = "-?:,[]{}#&*!|>'\"%@`"
_FLOW_END: Final = ",[]{}:#?"


class _UnsureError(Exception):
    """The document is not in the subset read here."""


#: What `value` returns for a document outside the subset: parse it with PyYAML.
UNSURE: Final = object()


class _Quoted(str):
    """A quoted scalar: a string whatever it says."""

    __slots__ = ()


_Node: TypeAlias = "dict[str, _Node] | list[_Node] | str | None"


def value(text: str, section: str, key: str) -> object:
    """`text`'s top-level ``section``'s ``key`` as PyYAML would load it (None: not given), or
    `UNSURE`."""
    try:
        return _value(text, section, key)
    except _UnsureError:
        return UNSURE


def _value(text: str, section: str, key: str) -> object:
    lines = _lines(text)
    pos, data = 0, None
    if lines:
        if lines[0][0] != 0:
            raise _UnsureError
        try:
            pos, data = _block(lines, 0, 0)
        except RecursionError:
            raise _UnsureError from None
    if pos != len(lines):
        raise _UnsureError
    if data is None:
        return None
    if not isinstance(data, dict):
        raise _UnsureError
    if section not in data:
        return None
    part = data[section]
    if not isinstance(part, dict):  # `metrics:` with nothing under it too, as endpoints.py
        raise _UnsureError
    return _scalar(part.get(key))


def _scalar(found: _Node) -> object:
    """The value of the node ``found`` as PyYAML constructs it, if plainly a str, int or bool."""
    if found is None or isinstance(found, _Quoted):
        return None if found is None else str(found)
    if not isinstance(found, str):
        raise _UnsureError
    if _DECIMAL.fullmatch(found):
        return int(found)
    if found in _BOOLS:
        return _BOOLS[found]
    if _not_str(found):
        raise _UnsureError
    return found


def _not_str(plain: str) -> bool:
    """Whether PyYAML may read the plain scalar ``plain`` as something else than a string (as
    a key: `on` and `yes` are the same key True, `1` and `0x1` the same key 1)."""
    return (
        plain[0] in _NOT_STR_FIRST
        and plain.count(".") < 2
        and bool(re.match(_NOT_STR, plain, re.X))
    )


def _lines(text: str) -> list[tuple[int, str]]:
    """(indent, content) of each line that holds more than a comment."""
    if any(_odd(match[0]) for match in _NOT_ASCII.finditer(text)):
        raise _UnsureError
    out = []
    for line in text.split("\n"):
        content = line.lstrip(" ")
        if not content or content.startswith("#"):
            continue
        indent = len(line) - len(content)
        if indent == 0 and content.startswith(("---", "...", "%")):
            raise _UnsureError
        out.append((indent, content.rstrip(" ")))
    return out


def _odd(char: str) -> bool:
    """Whether PyYAML refuses ``char`` or this reader leaves it to PyYAML (tab, CR, the other
    line breaks, a byte order mark)."""
    code = ord(char)
    return (
        code < 0xA0
        or code in (0x2028, 0x2029, 0xFEFF)
        or 0xD800 <= code <= 0xDFFF
        or 0xFFFD < code < 0x10000
    )


def _risky(plain: str) -> bool:
    """Whether PyYAML's SafeLoader might fail to construct ``plain`` wherever it is: a merge or
    value key, or anything that may be a date (`2001-13-45` is a ValueError)."""
    return plain in ("<<", "=") or (plain[:4].isdigit() and plain[4:5] == "-")


def _block(lines: list[tuple[int, str]], pos: int, indent: int) -> tuple[int, _Node]:
    """The block collection starting at ``lines[pos]`` (at ``indent``), and where it ends."""
    if lines[pos][1] == "-" or lines[pos][1].startswith("- "):
        return _sequence(lines, pos, indent)
    return _mapping(lines, pos, indent)


def _mapping(lines: list[tuple[int, str]], pos: int, indent: int) -> tuple[int, _Node]:
    out: dict[str, _Node] = {}
    while pos < len(lines) and lines[pos][0] == indent:
        content = lines[pos][1]
        match = _KEY.match(content)
        if match is None or match[1] in out or _not_str(match[1]):
            raise _UnsureError
        rest = content[match.end() :].lstrip(" ")
        pos += 1
        if rest and not rest.startswith("#"):
            out[match[1]] = _inline(rest)
        elif pos < len(lines) and lines[pos][0] > indent:
            pos, out[match[1]] = _block(lines, pos, lines[pos][0])
        elif pos < len(lines) and lines[pos][0] == indent and lines[pos][1].startswith("- "):
            pos, out[match[1]] = _sequence(lines, pos, indent)
        else:
            out[match[1]] = None
        if pos < len(lines) and lines[pos][0] > indent:
            raise _UnsureError  # a value continued on the next line
    return pos, out


def _sequence(lines: list[tuple[int, str]], pos: int, indent: int) -> tuple[int, _Node]:
    out: list[_Node] = []
    while pos < len(lines) and lines[pos][0] == indent and lines[pos][1].startswith("- "):
        out.append(_inline(lines[pos][1][2:].lstrip(" ")))
        pos += 1
        if pos < len(lines) and lines[pos][0] > indent:
            raise _UnsureError
    return pos, out


def _inline(text: str) -> _Node:
    """A value written on the rest of its line (block context)."""
    if text[0] in "[{\"'":
        end, node = _flow(text, 0)
        tail = text[end:]
        if tail and not (tail.startswith(" ") and tail.lstrip(" ").startswith("#")):
            raise _UnsureError
        return node
    if text[0] in _INDICATORS:
        raise _UnsureError
    plain = text.split(" #", 1)[0].rstrip(" ")
    if ": " in plain or plain.endswith(":") or _risky(plain):
        raise _UnsureError
    if len(plain) > _MAX_PLAIN:
        raise _UnsureError
    return plain


def _flow(text: str, pos: int) -> tuple[int, _Node]:
    """The flow node at ``text[pos]`` (no space before it) and where it ends."""
    first = text[pos] if pos < len(text) else ""
    if first in ("'", '"'):
        return _quoted(text, pos)
    if first in ("[", "{"):
        return _collection(text, pos)
    end = pos
    while end < len(text) and text[end] not in _FLOW_END:
        end += 1
    plain = text[pos:end].rstrip(" ")
    if not plain or plain[0] in _INDICATORS or text[end : end + 1] == "#" or _risky(plain):
        raise _UnsureError
    if len(plain) > _MAX_PLAIN:
        raise _UnsureError
    return pos + len(plain), plain


def _collection(text: str, pos: int) -> tuple[int, _Node]:
    mapping, close = text[pos] == "{", "}" if text[pos] == "{" else "]"
    out_map: dict[str, _Node] = {}
    out_seq: list[_Node] = []
    pos = _skip(text, pos + 1)
    while pos < len(text) and text[pos] != close:
        end, node = _flow(text, pos)
        if mapping:
            if type(node) is not str or node in out_map or _not_str(node):
                raise _UnsureError  # a duplicate, or a key PyYAML may read as another's twin
            if text[end : end + 2] != ": ":
                raise _UnsureError
            end, out_map[node] = _flow(text, _skip(text, end + 2))
        else:
            out_seq.append(node)
        pos = _skip(text, end)
        if text[pos : pos + 1] == ",":
            pos = _skip(text, pos + 1)
            if text[pos : pos + 1] in (close, ","):
                raise _UnsureError  # an empty entry
        elif text[pos : pos + 1] != close:
            raise _UnsureError
    if pos >= len(text):
        raise _UnsureError  # continued on the next line
    return pos + 1, out_map if mapping else out_seq


def _quoted(text: str, pos: int) -> tuple[int, _Node]:
    quote = text[pos]
    end = pos + 1
    while True:
        end = text.find(quote, end)
        if end < 0:
            raise _UnsureError  # continued on the next line
        if quote == "'" and text[end + 1 : end + 2] == "'":
            end += 2
            continue
        break
    body = text[pos + 1 : end]
    if quote == '"' and "\\" in body:
        raise _UnsureError
    if quote == "'":
        body = body.replace("''", "'")
    return end + 1, _Quoted(body)


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] == " ":
        pos += 1
    return pos
