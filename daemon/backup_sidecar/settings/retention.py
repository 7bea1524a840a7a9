"""A policy's retention keys: the plain `keep` count and the GFS rules of `restic forget`
(`keep_last`, `keep_hourly`, `keep_daily`, `keep_weekly`, `keep_monthly`, `keep_yearly`,
`keep_within`), mapped onto archiver.KeepRules.

`keep: N` is `keep_last: N`; the two together are refused (which would count?). Every other
combination is the union: an archive stays when any rule keeps it. A policy needs `keep` or at
least one rule. Counts are >= 0 or -1 / `unlimited` (every bucket, as restic's `unlimited`).
The same rules judge an incremental policy's backups (jobs/pageprune.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from backup_sidecar.archiver.gfs import UNLIMITED, KeepRules
from backup_sidecar.errors import KeyedValueError
from backup_sidecar.settings.values import Duration, Int

#: The GFS rule keys, in the order restic applies them.
RULE_KEYS = (
    "keep_last",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
    "keep_within",
)


def _unlimited(value: Any) -> Any:
    """`unlimited` (any case) is -1."""
    if isinstance(value, str) and value.strip().lower() == "unlimited":
        return UNLIMITED
    return value


KeepCount = Annotated[Int, BeforeValidator(_unlimited), Field(ge=UNLIMITED)]


class RetentionConfig(BaseModel):
    """What a policy keeps: `keep` (the newest N) and/or the GFS rules (see the module)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    keep: Int | None = Field(default=None, ge=0)
    keep_last: KeepCount | None = None
    keep_hourly: KeepCount | None = None
    keep_daily: KeepCount | None = None
    keep_weekly: KeepCount | None = None
    keep_monthly: KeepCount | None = None
    keep_yearly: KeepCount | None = None
    keep_within: Duration | None = None

    @model_validator(mode="after")
    def _retention(self) -> RetentionConfig:
        if self.keep is None and all(getattr(self, key) is None for key in RULE_KEYS):
            raise KeyedValueError(
                "keep", f"required: give keep (a count) or a rule ({', '.join(RULE_KEYS)})"
            )
        if self.keep is not None and self.keep_last is not None:
            raise KeyedValueError(
                "keep_last", "contradicts keep (keep N is keep_last N): give only one of them"
            )
        return self

    @property
    def gfs(self) -> bool:
        """Whether any GFS rule is set (not only `keep`)."""
        return any(getattr(self, key) is not None for key in RULE_KEYS)

    @property
    def retention_text(self) -> str:
        """`keep 7`, or the rules as the file names them (`keep_last 3, keep_daily 7`)."""
        return self.rules.describe() if self.gfs else f"keep {self.keep}"

    @property
    def rules(self) -> KeepRules:
        """The retention as the archiver applies it."""
        last = self.keep if self.keep is not None else self.keep_last
        return KeepRules(
            last=last or 0,
            hourly=self.keep_hourly or 0,
            daily=self.keep_daily or 0,
            weekly=self.keep_weekly or 0,
            monthly=self.keep_monthly or 0,
            yearly=self.keep_yearly or 0,
            within=self.keep_within,
        )


def check_offsite_keep(
    offsite_keep: Mapping[str, int] | None, policies: Mapping[str, RetentionConfig]
) -> None:
    """With an offsite store, a policy without a plain `keep` needs its own `offsite.keep`: the
    offsite copies are counted (the local keep is their default), never bucketed."""
    if offsite_keep is None:
        return
    for name, policy in policies.items():
        if policy.keep is None and name not in offsite_keep:
            raise KeyedValueError(
                f"offsite.keep.{name}",
                "required: policy has GFS rules and no plain keep to default to",
            )
