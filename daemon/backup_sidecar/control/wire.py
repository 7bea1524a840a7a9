"""The control socket's lines: one compact JSON object per line, decoded without trusting it.

Every way untrusted bytes can fail to decode (invalid UTF-8 or JSON, nesting past the recursion
limit, an integer past Python's digit limit, a value pydantic cannot describe) is a
ProtocolError naming the fault.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from backup_sidecar.errors import ProtocolError


def encode(obj: BaseModel | Mapping[str, Any]) -> bytes:
    """One compact JSON line, newline-terminated (JSON escapes any newline inside strings)."""
    data = obj.model_dump(mode="json") if isinstance(obj, BaseModel) else dict(obj)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def load_object(line: bytes) -> dict[str, Any]:
    """One line's JSON object; ProtocolError if it is not one."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"request is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"request is not valid JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:  # "[[[[..." within the size limit: json recurses once per level
        raise ProtocolError("request is not valid JSON: nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # e.g. an integer past Python's digit limit
        raise ProtocolError(f"request is not valid JSON: {first_line(exc)}") from None
    if not isinstance(data, dict):
        raise ProtocolError("a request is a JSON object")
    return data


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def describe(exc: ValidationError, *, tagged: bool = True, whole: str = "request") -> str:
    """The first three faults pydantic found, each as ``field.path: reason`` (``tagged``: the
    path starts with a union's tag, left out)."""
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"][1 if tagged else 0 :]) or whole
        cause = err.get("ctx", {}).get("error")
        parts.append(f"{loc}: {cause if cause is not None else err['msg']}")
    return "; ".join(parts)
