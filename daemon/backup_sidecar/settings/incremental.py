"""A policy's incremental keys: ``mode``, ``check`` and ``rebase`` (issue 16, the page store).

``mode: incremental`` backs the policy up into the page store (``<backup_dir>/pages/``): only
the pages that changed since the chain's previous backup are stored. ``rebase`` starts a new
chain (a backup with no parent: changed pages stored whole, not as deltas) ``after`` a duration
since the chain's first backup, or once the bytes the chain stored pass ``stored_fraction``
of the database's size. ``check`` is what runs in the backup's read transaction: ``full``
(``integrity_check``, what full archives run) or ``quick`` (``quick_check``). ``head_check``
(default 1d) is how old the policy's newest verified backup may get before the daemon fully
checks the chain's head (a verify: rebuild, SHA-256, integrity_check) after a backup.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from backup_sidecar.errors import KeyedValueError
from backup_sidecar.settings.values import Duration

Mode = Literal["full", "incremental"]
Check = Literal["full", "quick"]


class RebaseConfig(BaseModel):
    """When an incremental chain starts again from a new base."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    after: Duration | None = None
    stored_fraction: float | None = Field(default=None, gt=0, le=100)

    @model_validator(mode="after")
    def _something(self) -> RebaseConfig:
        if self.after is None and self.stored_fraction is None:
            raise ValueError("give after, stored_fraction or both")
        return self


#: How often the daemon fully checks an incremental policy's chain head by default.
HEAD_CHECK_DEFAULT = timedelta(days=1)


def check_incremental_keys(
    mode: Mode, check: Check | None, rebase: RebaseConfig | None, head_check: timedelta | None
) -> None:
    """``check: quick``, ``rebase`` and ``head_check`` belong to incremental policies: a full
    archive always runs integrity_check on its copy and has no chain."""
    if mode == "incremental":
        return
    if head_check is not None:
        raise KeyedValueError("head_check", "needs mode: incremental (archives are checked whole)")
    if check == "quick":
        raise KeyedValueError("check", "quick needs mode: incremental (full archives run full)")
    if rebase is not None:
        raise KeyedValueError("rebase", "needs mode: incremental (a full archive has no chain)")
