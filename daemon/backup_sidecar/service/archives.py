"""The backup directory's archives as the daemon publishes them: each policy's last success,
archive and damaged counts, the damaged-newest reason, and the creation-sequence counter."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import structlog

from backup_sidecar import archiver
from backup_sidecar.errors import SidecarError
from backup_sidecar.jobs.pagesummary import page_successes
from backup_sidecar.service.health import HealthState
from backup_sidecar.service.live import LiveConfig
from backup_sidecar.service.metrics import Metrics
from backup_sidecar.service.successes import SuccessLedger, counts_as_success
from backup_sidecar.settings.model import SCRUB_JOB

log = structlog.get_logger(__name__)


def with_page_successes(
    backup_dir: Path, archives: Iterable[archiver.ArchiveInfo]
) -> list[archiver.ArchiveInfo]:
    """``archives`` and the incremental backups (jobs/pagesummary.py), newest first: what the
    last-success ledger, the catch-up, the archive and damaged counts and the damaged-newest
    alarm read (never the drill or the prune)."""
    merged = [*archives, *page_successes(backup_dir)]
    return sorted(merged, key=lambda a: a.newness, reverse=True)


def newest_verified(archives: Iterable[archiver.ArchiveInfo]) -> dict[str, datetime]:
    """Each policy's newest verified archive time in ``archives`` (a listing, newest first)."""
    newest: dict[str, datetime] = {}
    for archive in archives:
        if archive.status is archiver.ArchiveStatus.VERIFIED or counts_as_success(archive):
            newest.setdefault(archive.policy, archive.created_at)
    return newest


def damaged_newest(archives: list[archiver.ArchiveInfo]) -> tuple[tuple[str, str, str], ...]:
    """(policy, archive, reason) for each policy whose newest archive (``archives`` is newest
    first) is damaged; ``pre_restore`` archives are left out (restores make them, not the
    schedule). A newer good archive or deleting the damaged one clears it."""
    newest: dict[str, archiver.ArchiveInfo] = {}
    for archive in archives:
        newest.setdefault(archive.policy, archive)
    return tuple(
        (policy, a.name, a.error or "damaged")
        for policy, a in sorted(newest.items())
        if a.status is archiver.ArchiveStatus.DAMAGED and policy != archiver.PRE_RESTORE_POLICY
    )


def reconcile_sequence(backup_dir: Path, archives: list[archiver.ArchiveInfo]) -> None:
    """Raise the directory's creation-sequence counter to the highest sequence on disk (it is a
    cache, never trusted alone: see archiver/sequence.py)."""
    seen = max((a.sequence for a in archives if a.sequence is not None), default=0)
    try:
        if archiver.reconcile_sequence(backup_dir, seen=seen):
            log.warning("archive_sequence_raised", sequence=seen)
    except (SidecarError, OSError) as exc:
        log.warning("archive_sequence_unchecked", error=str(exc))


class ArchivesPublisher:
    """Reads the daemon's one catalog and publishes what the archives say."""

    def __init__(
        self,
        catalog: archiver.Catalog,
        *,
        live: LiveConfig,
        ledger: SuccessLedger,
        metrics: Metrics,
        health: HealthState,
    ) -> None:
        self.catalog = catalog
        self._live = live
        self._ledger = ledger
        self._metrics = metrics
        self._health = health
        self._logged = -1

    def seed_from_disk(self) -> None:
        """Every configured policy's last success, and each policy's archive count, from the
        archives on disk: at start, on every reload, after every operation that may have
        written or deleted archives, and (through the watcher) every health interval."""
        backup_dir = self._live.now.runtime.backup_dir
        try:
            archives = self.scan()
        except OSError as exc:
            log.error("backup_dir_unreadable", path=str(backup_dir), error=str(exc))
            return
        successes = with_page_successes(backup_dir, archives)
        self._ledger.sync(successes, policies=self._live.now.settings.policies)
        # Incremental backups count as archives of their policy, damaged ones too.
        self._metrics.archives_counted(Counter(a.policy for a in successes))
        damaged = [a for a in successes if a.status is archiver.ArchiveStatus.DAMAGED]
        self._metrics.damaged_counted(Counter(a.policy for a in damaged))
        self._health.set_damaged_newest(damaged_newest(successes))
        reconcile_sequence(backup_dir, archives)

    def scan(self) -> list[archiver.ArchiveInfo]:
        """The catalog rescanned now (only new or changed archives are read), newest first;
        each change is logged once (archive_catalog_updated). OSError if unreadable."""
        snapshot = self.catalog.refresh()
        if snapshot.generation != self._logged:
            self._logged = snapshot.generation
            log.info(
                "archive_catalog_updated",
                archives=len(snapshot.archives),
                read=snapshot.read,
                dropped=snapshot.dropped,
                scans=self.catalog.scans,
                reads=self.catalog.reads,
            )
        return list(snapshot.archives)

    def changed(self) -> None:
        """Publish the backup directory as it is now, after a backup, prune or restore: the
        archive counts read 0 after a first backup until the next health check."""
        with self._live.publishing:
            self.seed_from_disk()

    def last_success(self, policy: str) -> datetime | None:
        if policy == SCRUB_JOB:
            # A scrub reads every archive: it waits for its schedule, never runs at start.
            return datetime.now(UTC)
        # The catalog as the daemon last published it (at start: just scanned), shared by every
        # policy's catch-up: not one listing of the directory per policy.
        if self.catalog.scans == 0:
            self.catalog.refresh()
        archives = with_page_successes(
            self._live.now.runtime.backup_dir, self.catalog.snapshot().archives
        )
        return newest_verified(archives).get(policy)
