"""Validate one decoded scraper document into rows for the arrow tables.

The scraper format: ``{"manufacturer", "scraped_at", "arrows": [{"model_name", "material",
"arrow_type", "description", ..., "spine_specifications": [{"spine", "outer_diameter",
"gpi_weight", "length_options", ...}]}]}``. Unknown keys are ignored (the scraper adds some);
a known key with the wrong type is an error naming the key path, e.g.
``arrows[3].spine_specifications[1].gpi_weight``. Every value stored must be one SQLite holds
as the JSON said: numbers finite and within 64 bits (NaN, Infinity, ``1e400`` and 20-digit
integers are refused, whether decoded by :mod:`arrows_json` as :class:`BadNumber` or handed in
as Python floats), text valid Unicode (a lone surrogate escape such as ``"\\ud800"`` is
refused), spines plain ASCII digits. Anything else raises :class:`ArrowDataError`, never
another exception.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backup_sidecar.errors import ArrowDataError

#: Arrow keys copied to the ``arrows`` column of the same name.
_ARROW_TEXT = ("material", "carbon_content", "arrow_type", "description", "source_url")
#: Arrow keys that apply to every spine of the arrow unless the spine sets its own.
_SPINE_DEFAULTS = ("straightness_tolerance", "weight_tolerance")
_SPINE_NUMBERS = ("outer_diameter", "inner_diameter", "wall_thickness")
_SPINE_TEXT = ("diameter_category", "insert_weight_range", "nock_size", "notes", *_SPINE_DEFAULTS)
#: SQLite's INTEGER range: a larger Python int cannot be bound (OverflowError).
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_SPINE_DIGITS = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True)
class BadNumber:
    """A JSON number no column can hold (NaN, Infinity, 1e400, a 5,000-digit integer), kept as
    its text by the decoder so the parser can refuse it with its key path, not at decode time."""

    text: str
    reason: str

    def __repr__(self) -> str:
        return self.text


@dataclass(frozen=True)
class ArrowRecord:
    """One arrow: its key, the column values the JSON gave, and its spine rows."""

    manufacturer: str
    model_name: str
    values: Mapping[str, object]
    spines: tuple[Mapping[str, object], ...]


@dataclass(frozen=True)
class ArrowSource:
    """A validated document: the arrows to upsert, duplicates already merged."""

    label: str
    manufacturer: str
    arrows: tuple[ArrowRecord, ...]
    duplicates_merged: int


def parse_document(doc: Any, *, source: str) -> ArrowSource:
    """Validate a decoded document; raises :class:`ArrowDataError` at the first fault."""
    p = _Path(source)
    if not isinstance(doc, dict):
        raise p.error("", f"expected a JSON object at the top, got {_kind(doc)}")
    file_maker = _opt_text(doc, "manufacturer", p, "")
    scraped_at = _opt_text(doc, "scraped_at", p, "")
    items = doc.get("arrows")
    if not isinstance(items, list):
        raise p.error("arrows", f"expected a list of arrows, got {_kind(items)}")
    merged: dict[tuple[str, str], ArrowRecord] = {}
    for i, item in enumerate(items):
        record = _parse_arrow(item, p, f"arrows[{i}]", file_maker, scraped_at)
        key = (record.manufacturer, record.model_name)
        merged[key] = _merge(merged[key], record) if key in merged else record
    return ArrowSource(
        label=source,
        manufacturer=file_maker or ", ".join(sorted({m for m, _ in merged})),
        arrows=tuple(merged.values()),
        duplicates_merged=len(items) - len(merged),
    )


class _Path:
    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key_path: str, reason: str) -> ArrowDataError:
        return ArrowDataError(self.source, key_path, reason)


def _parse_arrow(
    item: Any, p: _Path, at: str, file_maker: str | None, scraped_at: str | None
) -> ArrowRecord:
    if not isinstance(item, dict):
        raise p.error(at, f"expected an arrow object, got {_kind(item)}")
    maker = _opt_text(item, "manufacturer", p, at) or file_maker
    if not maker:
        raise p.error(f"{at}.manufacturer", "missing (and no top-level manufacturer)")
    model = _opt_text(item, "model_name", p, at)
    if not model:
        raise p.error(f"{at}.model_name", "missing or empty")
    values: dict[str, object] = {}
    for key in _ARROW_TEXT:
        if key in item:
            values[key] = _opt_text(item, key, p, at)
    for key in ("image_url", "primary_image_url"):
        if key in item:
            values.setdefault("image_url", _opt_text(item, key, p, at))
    arrow_scraped = _opt_text(item, "scraped_at", p, at) or scraped_at
    if arrow_scraped:
        values["scraped_at"] = arrow_scraped
    defaults = {k: _opt_text(item, k, p, at) for k in _SPINE_DEFAULTS if k in item}
    specs = item.get("spine_specifications", [])
    if not isinstance(specs, list):
        raise p.error(f"{at}.spine_specifications", f"expected a list, got {_kind(specs)}")
    spines: dict[int, Mapping[str, object]] = {}
    for j, spec in enumerate(specs):
        row = _parse_spine(spec, p, f"{at}.spine_specifications[{j}]", defaults)
        spines[int(str(row["spine"]))] = row
    return ArrowRecord(
        manufacturer=maker, model_name=model, values=values, spines=tuple(spines.values())
    )


def _parse_spine(spec: Any, p: _Path, at: str, defaults: Mapping[str, object]) -> dict[str, object]:
    if not isinstance(spec, dict):
        raise p.error(at, f"expected a spine object, got {_kind(spec)}")
    row: dict[str, object] = {"spine": _spine_value(spec.get("spine"), p, f"{at}.spine")}
    gpi = _opt_number(spec, "gpi_weight", p, at)
    if gpi is None:
        raise p.error(f"{at}.gpi_weight", "missing (every spine needs its grains per inch)")
    row["gpi_weight"] = gpi
    row |= {k: _opt_number(spec, k, p, at) for k in _SPINE_NUMBERS if k in spec}
    row |= {k: v for k, v in defaults.items() if k not in spec}
    row |= {k: _opt_text(spec, k, p, at) for k in _SPINE_TEXT if k in spec}
    if "length_options" in spec:
        row["length_options"] = _length_options(spec["length_options"], p, f"{at}.length_options")
    return row


def _spine_value(value: Any, p: _Path, at: str) -> int:
    if isinstance(value, bool):
        raise p.error(at, "expected an integer spine, got a boolean")
    if isinstance(value, BadNumber):
        raise p.error(at, f"{value.text} {value.reason}")
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and _SPINE_DIGITS.fullmatch(value.strip()):
        value = int(value.strip())  # ASCII digits only: "²".isdigit() is true, int("²") fails
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise p.error(at, f"spine {_shown(value)} is out of range (64-bit integers)")
        return value
    if value is None:
        raise p.error(at, "missing")
    raise p.error(at, f"expected an integer spine, got {_kind(value)} {_shown(value)}")


def _length_options(value: Any, p: _Path, at: str) -> str | None:
    """Stored as JSON text, as the app stores it."""
    if value is None or isinstance(value, str):
        return _text(value, p, at)
    if not isinstance(value, list):
        raise p.error(at, f"expected a list of lengths, got {_kind(value)}")
    for i, item in enumerate(value):
        if isinstance(item, str):
            _text(item, p, f"{at}[{i}]")
        elif _number(item, p, f"{at}[{i}]", what="a length (number or string)") is None:
            raise p.error(f"{at}[{i}]", "expected a length (number or string), got null")
    return json.dumps(value)


def _opt_text(obj: Mapping[str, Any], key: str, p: _Path, at: str) -> str | None:
    return _text(obj.get(key), p, _join(at, key))


def _text(value: Any, p: _Path, at: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise p.error(at, f"expected a string, got {_kind(value)} {_shown(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # "\ud800": SQLite could not bind it
        reason = f"not valid Unicode: a lone surrogate \\u{ord(value[exc.start]):04x}"
        raise p.error(at, f"{reason} at character {exc.start}") from None
    return value


def _opt_number(obj: Mapping[str, Any], key: str, p: _Path, at: str) -> float | int | None:
    return _number(obj.get(key), p, _join(at, key), what="a number")


def _number(value: Any, p: _Path, at: str, *, what: str) -> float | int | None:
    if isinstance(value, BadNumber):
        raise p.error(at, f"{value.text} {value.reason}")
    if isinstance(value, bool) or not isinstance(value, int | float | None):
        raise p.error(at, f"expected {what}, got {_kind(value)} {_shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise p.error(at, f"{value!r} is not a finite number")
    if isinstance(value, int) and not _INT_MIN <= value <= _INT_MAX:
        raise p.error(at, f"{_shown(value)} is out of range (64-bit integers)")
    return value


def _merge(first: ArrowRecord, later: ArrowRecord) -> ArrowRecord:
    """A repeated arrow in one file: the later listing's values win, spines are merged."""
    spines = {int(str(s["spine"])): s for s in (*first.spines, *later.spines)}
    return ArrowRecord(
        manufacturer=first.manufacturer,
        model_name=first.model_name,
        values={**first.values, **later.values},
        spines=tuple(spines.values()),
    )


def _join(at: str, key: str) -> str:
    return f"{at}.{key}" if at else key


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, BadNumber):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _shown(value: object) -> str:
    """``repr(value)`` cut short for a one-line error: a value may be megabytes of text, and
    ``str()`` of an integer past 4,300 digits raises."""
    if isinstance(value, dict | list):
        return f"of {len(value)} item(s)"
    if isinstance(value, int) and value.bit_length() > 200:
        return f"of about {int(value.bit_length() * 0.30103) + 1} digits"
    shown = repr(value)
    return shown if len(shown) <= 64 else shown[:61] + "..."
