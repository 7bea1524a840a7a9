"""What the offsite upload job's passes use: the failure reason of an exception (a bounded
label set), the lease renewal beside a long upload, each policy's newest confirmed copy, and
the per-policy series rebuilt from it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from datetime import datetime

import structlog
from prometheus_client import Gauge

from backup_sidecar import archiver, offsite
from backup_sidecar.errors import SidecarError
from backup_sidecar.jobs.runtime import OffsiteSpec

log = structlog.get_logger(__name__)


def failure_reason(exc: BaseException) -> str:
    """The `reason` label of ``backup_sidecar_offsite_failures_total`` (a bounded set)."""
    name = type(exc).__name__
    for word, reason in (
        ("Unavailable", "unavailable"),
        ("Request", "refused"),
        ("Corrupt", "corrupt"),
        ("Decrypt", "decrypt"),
        ("Lease", "lease"),
        ("Credentials", "credentials"),
        ("Key", "key"),
    ):
        if word in name:
            return reason
    return "local" if isinstance(exc, OSError) else "other"


@contextlib.contextmanager
def renewing(lease: offsite.Lease, stop: threading.Event) -> Iterator[None]:
    """Renew ``lease`` every third of its TTL on a thread while the block runs (a long
    upload): without it, an upload outlasting the lease could never be confirmed."""
    done = threading.Event()

    def renew() -> None:
        while not done.wait(lease.ttl / 3) and not stop.is_set():
            try:
                lease.renew()
            except (SidecarError, OSError) as exc:  # the upload's own check then refuses
                log.warning("offsite_lease_renewal_failed", error=str(exc))
                return

    thread = threading.Thread(target=renew, name="offsite-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def same_store(a: OffsiteSpec | None, b: OffsiteSpec | None) -> bool:
    """Whether two sections name the same store and lease (``keep``, ``max_age`` or the keys
    changing keeps the store, its lease and its series; anything else reopens them)."""
    if a is None or b is None:
        return a is b
    fields = ("url", "endpoint", "region", "path_style", "attempts", "lease_ttl")
    return all(getattr(a, f) == getattr(b, f) for f in fields)


def newest_confirmed(
    local: list[archiver.ArchiveInfo],
    confirmed: Mapping[str, datetime],
    suffix: str,
    policies: set[str],
) -> dict[str, float]:
    """Each of ``policies``' newest confirmed copy (the store's upload time) among the local
    archives, so the gauge is right after a restart too, before this process uploads anything."""
    newest: dict[str, float] = {}
    for archive in local:
        modified = confirmed.get(archive.path.name + suffix)
        if modified is not None and archive.policy in policies:
            newest[archive.policy] = max(modified.timestamp(), newest.get(archive.policy, 0))
    return newest


def replace_series(
    gauge: Gauge, old: Mapping[str, float], new: Mapping[str, float]
) -> dict[str, float]:
    """Set ``gauge`` to exactly ``new`` (one series per label value), removing ``old``'s others."""
    for label in old.keys() - new.keys():
        gauge.remove(label)
    for label, value in new.items():
        gauge.labels(label).set(value)
    return dict(new)
