"""Read one scraper JSON file as untrusted bytes: bounded, strict, never an uncaught exception.

The path is opened once (following a symbolic link, as any command-line tool does: a
Kubernetes ConfigMap's files are links) and must then be a regular file: a directory, FIFO,
device or socket is refused before a byte is read, so ``/dev/zero`` or a FIFO cannot hang or
exhaust the import. At most :data:`MAX_JSON_BYTES` are read. The bytes must be UTF-8 (a BOM
is allowed) and JSON; numbers that no column could hold (NaN, Infinity, ``1e400``, integers
past 64 bits, however many digits) decode to :class:`BadNumber`, which the parser refuses with
the key path. Every fault is an :class:`ArrowDataError` naming the file.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any, Final

from backup_sidecar.appdata.arrows_parse import BadNumber
from backup_sidecar.archiver.safefs import file_kind
from backup_sidecar.errors import ArrowDataError

#: The largest scraper file read (the real ones are 8-43 kB).
MAX_JSON_BYTES: Final = 16 * 1024 * 1024
_INT_MAX_DIGITS: Final = 19  # 2**63 has 19 digits: longer never fits, shorter is checked
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_FLAGS: Final = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def read_document(path: Path) -> Any:
    """The decoded JSON document at ``path`` (see the module doc)."""
    return decode_document(read_bounded(path), source=str(path))


def read_bounded(path: Path) -> bytes:
    """The bytes of the regular file at ``path``, at most :data:`MAX_JSON_BYTES` of them."""
    label = str(path)
    try:
        fd = os.open(path, _FLAGS)  # O_NONBLOCK: opening a FIFO does not wait for a writer
    except OSError as exc:  # a socket cannot be opened at all (ENXIO): say what it is
        kind = _kind_at(path)
        reason = f"is {kind}{_link(path)}" if kind else f"cannot open: {exc.strerror}{_link(path)}"
        raise ArrowDataError(label, "", reason) from None
    except ValueError:  # a NUL byte in the path
        raise ArrowDataError(label, "", "cannot open: the path holds a NUL byte") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            reason = f"is {file_kind(mode)}{_link(path)}, not a regular JSON file"
            raise ArrowDataError(label, "", reason)
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_JSON_BYTES:
            chunk = os.read(fd, min(1 << 20, MAX_JSON_BYTES + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ArrowDataError(label, "", f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if size > MAX_JSON_BYTES:
        limit = f"{MAX_JSON_BYTES // (1024 * 1024)} MiB"
        raise ArrowDataError(label, "", f"is larger than {limit}; not a scraper file, not read")
    return b"".join(chunks)


def decode_document(data: bytes, *, source: str) -> Any:
    """Decode UTF-8 JSON; every fault is an :class:`ArrowDataError` naming ``source``."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        reason = f"is not valid UTF-8: byte {exc.start} (line {line}) is 0x{data[exc.start]:02x}"
        raise ArrowDataError(source, "", reason) from None
    try:
        return json.loads(
            text, parse_int=_int, parse_float=_float, parse_constant=_constant, strict=True
        )
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise ArrowDataError(source, "", f"invalid JSON at {where}: {exc.msg}") from None
    except RecursionError:  # "[[[[...": the decoder recurses once per level
        raise ArrowDataError(source, "", "invalid JSON: nested too deeply") from None


def _int(text: str) -> int | BadNumber:
    digits = text.lstrip("-")
    if len(digits) <= _INT_MAX_DIGITS and _INT_MIN <= (value := int(text)) <= _INT_MAX:
        return value
    shown = text if len(text) <= 24 else f"{text[:20]}... ({len(digits)} digits)"
    return BadNumber(shown, "is out of range (64-bit integers)")


def _float(text: str) -> float | BadNumber:
    value = float(text)  # the decoder matched a JSON number: float() cannot fail, only overflow
    if math.isfinite(value):
        return value
    shown = text if len(text) <= 24 else f"{text[:20]}..."
    return BadNumber(shown, "is out of range (not a finite number)")


def _constant(text: str) -> BadNumber:
    return BadNumber(text, "is not a JSON number")


def _link(path: Path) -> str:
    try:
        return f" (a symbolic link to {str(path.readlink())!r})" if path.is_symlink() else ""
    except OSError:
        return ""


def _kind_at(path: Path) -> str:
    """What ``path`` (followed) is when it is there but not a regular file, else ``""``."""
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return ""
    return "" if stat.S_ISREG(mode) else f"{file_kind(mode)}, not a regular JSON file"
