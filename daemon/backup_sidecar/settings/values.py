"""The value types of the configuration: durations, names, bounded integers (the refusal that
carries a key path, KeyedValueError, lives in errors)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
)

ENV_PREFIX = "SIDECAR_"
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MODE_PATTERN = re.compile(r"0?[0-7]{3,4}")
#: The longest duration any key takes: an `every` much longer than this made APScheduler compute
#: a next run past the year 9999 (a traceback instead of a config error).
MAX_DURATION = timedelta(days=3650)


def parse_duration(value: Any) -> Any:
    """Read "30s", "5m", "1h", "1d", "1h30m" or seconds; hand anything else to pydantic."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or like 30s, 5m, 1h, 1d")
    seconds: float | None = None
    if isinstance(value, int | float):
        seconds = value
    elif isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif _DURATION.fullmatch(text):
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
        elif not text.startswith("p"):  # ISO 8601 durations (P1D, PT30S) go on to pydantic
            raise ValueError(
                f"invalid duration {_shown(value)}: use seconds or e.g. 30s, 5m, 1h, 1d"
            )
    if seconds is None:
        return value
    try:
        return timedelta(seconds=seconds)
    except (OverflowError, ValueError):
        raise ValueError(f"duration {_shown(value)} is out of range") from None


def _shown(value: object) -> str:
    """A value as quoted in an error, cut short: the message stays one readable line."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}... ({len(text)} characters)"


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be greater than 0")
    return value


def _not_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError("must be >= 0")
    return value


def _bounded(value: timedelta) -> timedelta:
    if value > MAX_DURATION:
        raise ValueError(f"must be at most {MAX_DURATION.days}d (10 years)")
    return value


def at_least(minimum: timedelta, text: str) -> AfterValidator:
    """A lower bound for one key's duration, named as the user writes it (e.g. "1s")."""

    def check(value: timedelta | None) -> timedelta | None:
        if value is not None and value < minimum:
            raise ValueError(f"must be at least {text}")
        return value

    return AfterValidator(check)


def at_most(maximum: timedelta, text: str, why: str) -> AfterValidator:
    """An upper bound for one key's duration, with the reason for it."""

    def check(value: timedelta) -> timedelta:
        if value > maximum:
            raise ValueError(f"must be at most {text} ({why})")
        return value

    return AfterValidator(check)


def _name(value: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        raise ValueError(f"invalid name {value!r}: use [a-z][a-z0-9_]{{0,31}}")
    return value


Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), AfterValidator(_positive), AfterValidator(_bounded)
]
NonNegativeDuration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    AfterValidator(_not_negative),
    AfterValidator(_bounded),
]


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a whole number, not true/false")
    return value


def _not_empty(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty")
    return value


Name = Annotated[str, AfterValidator(_name)]
Int = Annotated[int, BeforeValidator(_not_bool)]


def parse_cpu_threads(value: Any) -> Any:
    """``auto``, 1 or 2 (also as environment text)."""
    if value == "auto" or (type(value) is int and value in (1, 2)):
        return value
    if isinstance(value, str) and value.strip() in ("1", "2"):
        return int(value)
    raise ValueError(f"must be auto, 1 or 2, not {value!r}")


FilePath = Annotated[Path, BeforeValidator(_not_empty)]
