"""The opt-in ``maintenance`` section: health thresholds and the maintenance the daemon may run.

One section for the whole daemon (``databases`` narrows it; default: every database). The
thresholds ``max_wal_bytes`` and ``max_freelist_ratio`` are exported as gauges and alerted on
(config/alerts.yml); a WAL past ``max_wal_bytes`` is checkpointed (TRUNCATE) when ``checkpoint``
is on. After each successful (verified) backup of a database: ``PRAGMA optimize`` when
``optimize`` is on, and ``VACUUM`` (``incremental_vacuum`` with auto_vacuum=incremental) when
``vacuum`` is on, its freelist ratio is past ``max_freelist_ratio``, the time of day is inside
``window`` (in the configured timezone) and its estimated cost fits ``max_writer_wait``.
"""

from __future__ import annotations

import re
from datetime import time, timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from backup_sidecar.errors import KeyedValueError
from backup_sidecar.settings.values import Duration, Int, Name, at_most

_WINDOW = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)")


def parse_window(text: str) -> tuple[time, time]:
    """``"HH:MM-HH:MM"`` as (start, end); an end at or before the start wraps past midnight."""
    found = _WINDOW.fullmatch(text.strip())
    if found is None:
        raise ValueError(f'invalid window {text!r}: use "HH:MM-HH:MM" such as "02:00-04:00"')
    h1, m1, h2, m2 = (int(g) for g in found.groups())
    if (h1, m1) == (h2, m2):
        raise ValueError(f"window {text!r} is empty: start and end are the same time")
    return time(h1, m1), time(h2, m2)


def in_window(window: tuple[time, time], now: time) -> bool:
    """Whether ``now`` (a wall-clock time of day) lies in [start, end), wrapping midnight."""
    start, end = window
    return start <= now < end if start < end else now >= start or now < end


class MaintenanceConfig(BaseModel):
    """Thresholds and opt-in maintenance of the live databases (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: None: every configured database; an empty list is refused (it would maintain none).
    databases: Annotated[list[Name], Field(min_length=1)] | None = None
    max_wal_bytes: Int | None = Field(default=None, ge=1)
    max_freelist_ratio: float | None = Field(default=None, gt=0, le=1)
    checkpoint: bool = True
    optimize: bool = True
    vacuum: bool = False
    window: str | None = None
    #: The longest the application's writers may wait on one maintenance operation.
    max_writer_wait: Annotated[Duration, at_most(timedelta(hours=1), "1h", "a writer's wait")] = (
        timedelta(seconds=5)
    )

    @field_validator("window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None:
            parse_window(value)
        return value

    @model_validator(mode="after")
    def _vacuum_needs(self) -> MaintenanceConfig:
        if self.vacuum and self.window is None:
            raise ValueError('vacuum needs a window such as "02:00-04:00"')
        if self.vacuum and self.max_freelist_ratio is None:
            raise ValueError("vacuum needs max_freelist_ratio (it runs only past it)")
        return self

    @property
    def window_times(self) -> tuple[time, time] | None:
        return parse_window(self.window) if self.window is not None else None

    def covers(self, database: str) -> bool:
        """Whether this section applies to ``database``."""
        return self.databases is None or database in self.databases


class MaintenanceSection(BaseModel):
    """The ``maintenance`` key of the Settings (a mixin: model.py is at its size limit), with
    the check that every database it names is configured."""

    maintenance: MaintenanceConfig | None = None

    @model_validator(mode="after")
    def _maintained_databases_exist(self) -> MaintenanceSection:
        known = list(getattr(self, "databases", {}))
        for db in (self.maintenance.databases or ()) if self.maintenance else ():
            if db not in known:
                raise KeyedValueError(
                    "maintenance.databases", f"unknown database {db!r} (known: {', '.join(known)})"
                )
        return self
