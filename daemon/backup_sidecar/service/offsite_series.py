"""What each offsite upload pass publishes: the pending gauge, each policy's newest confirmed
copy (``backup_sidecar_offsite_last_success_timestamp_seconds`` and ``offsite_status``), and the
lag check's view (``service/offsite_health.py``). The series are rebuilt from the bucket at each
pass, so a removed policy, a changed store or a copy deleted there loses its series or value."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime

from backup_sidecar import archiver
from backup_sidecar.service.metric_families import MetricFamilies
from backup_sidecar.service.offsite_health import OffsiteLag
from backup_sidecar.service.offsite_passes import newest_confirmed, replace_series
from backup_sidecar.service.offsite_state import UploaderState


class OffsiteSeries:
    """The uploader's published view, moved by its passes."""

    def __init__(self, *, families: MetricFamilies, state: UploaderState, lag: OffsiteLag) -> None:
        self._families = families
        self._state = state
        self._lag = lag
        self._last_success: dict[str, float] = {}

    def listed(
        self,
        local: list[archiver.ArchiveInfo],
        confirmed: Mapping[str, datetime],
        waiting: list[archiver.ArchiveInfo],
        *,
        suffix: str,
        policies: set[str],
    ) -> None:
        """A pass that listed the bucket: ``confirmed`` object names with their upload times,
        the local archives not offsite (``waiting``: pending or mismatched)."""
        newest = newest_confirmed(local, confirmed, suffix, policies)
        gauge = self._families.offsite_last_success
        self._last_success = replace_series(gauge, self._last_success, newest)
        copies = {}
        for archive in local:  # each policy's newest confirmed copy, for offsite_status
            if (at := confirmed.get(name := archive.path.name + suffix)) is not None:
                self._state.confirmed(archive.policy, name, at.timestamp())
                copies[archive.name] = name
        self._state.listed(copies, [a.name for a in waiting])
        self.waiting(waiting, newest)

    def waiting(
        self, waiting: list[archiver.ArchiveInfo], newest: Mapping[str, float] | None = None
    ) -> None:
        """The archives not offsite (``newest`` None: the store did not answer)."""
        self._families.offsite_pending.set(len(waiting))
        self._state.pending(len(waiting))
        if newest is None:
            self._state.unanswered(a.name for a in waiting)
        self._lag.observed(Counter(a.policy for a in waiting), newest or {})

    def uploaded(
        self,
        archive: archiver.ArchiveInfo,
        obj: str,
        moment: float,
        left: list[archiver.ArchiveInfo],
    ) -> None:
        """``archive`` was just confirmed offsite as ``obj``; ``left`` are still not offsite."""
        self._state.confirmed(archive.policy, obj, moment)
        self._state.uploaded(archive.name, obj)
        if moment > self._last_success.get(archive.policy, 0.0):
            self._last_success[archive.policy] = moment
            self._families.offsite_last_success.labels(archive.policy).set(moment)
        self._families.offsite_pending.set(len(left))
        self._state.pending(len(left))
        self._lag.uploaded(archive.policy, sum(a.policy == archive.policy for a in left))

    def reset(self) -> None:
        """The store changed or the section went: every series and the lag view forgotten."""
        self._last_success = replace_series(
            self._families.offsite_last_success, self._last_success, {}
        )
        self._families.offsite_pending.set(0)
        self._lag.reset()
