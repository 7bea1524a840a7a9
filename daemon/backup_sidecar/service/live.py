"""The configuration the daemon runs with now: settings, resolved paths and the jobs' runtime,
swapped together by a reload under the publishing lock."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from backup_sidecar.jobs import Runtime
from backup_sidecar.settings import ResolvedPaths, Settings


@dataclass(frozen=True)
class Configured:
    """One configuration: what the file said, where it points, and what the jobs take."""

    settings: Settings
    paths: ResolvedPaths
    runtime: Runtime

    @classmethod
    def of(cls, settings: Settings, paths: ResolvedPaths) -> Configured:
        return cls(settings, paths, Runtime.from_settings(settings, paths))


@dataclass
class LiveConfig:
    """The current `Configured`. ``publishing`` is held while a reload swaps it and while the
    watcher or a job publishes, so a check begun before a reload never republishes what the
    reload removed."""

    now: Configured
    publishing: threading.Lock = field(default_factory=threading.Lock)

    def publish_if_configured(self, policy: str, publish: Callable[[], object]) -> bool:
        """Run ``publish`` if ``policy`` is in the configuration now, under the publishing lock:
        a reload cannot remove the policy between the check and the publishing (and then leave
        an alarm of a policy nothing watches any more)."""
        with self.publishing:
            if policy not in self.now.settings.policies:
                return False
            publish()
            return True
