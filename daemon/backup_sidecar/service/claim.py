"""The daemon's claim on its backup directory: one daemon per directory, kept while it runs."""

from __future__ import annotations

import threading
from pathlib import Path

import structlog

from backup_sidecar import archiver
from backup_sidecar.errors import SidecarError
from backup_sidecar.service.health import HealthState

log = structlog.get_logger(__name__)


class BackupDirClaim:
    """The backup directory's lock, taken at start and retaken when it goes missing."""

    def __init__(self, backup_dir: Path, *, health: HealthState) -> None:
        self._backup_dir = backup_dir  # never changes on reload
        self._health = health
        self._lock: archiver.DirectoryLock | None = None
        self._guard = threading.Lock()

    def take(self) -> None:
        """Create the directory, refuse a planted link before touching it, and lock it
        (SidecarError if another daemon holds it)."""
        self._backup_dir.mkdir(parents=True, exist_ok=True)
        archiver.check_backup_dir(self._backup_dir)
        lock = archiver.DirectoryLock(self._backup_dir)
        lock.acquire()
        self._lock = lock

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()

    def ensure(self) -> None:
        """Recreate a backup directory deleted under the running daemon, and claim it again
        (the claim's lock file went with the old directory, so a second daemon could start);
        likewise retake a lock file deleted or replaced under it. If another daemon took the
        new lock meanwhile, /healthz names it and no scheduled run writes until the claim is
        back (retried here every health interval)."""
        backup_dir = self._backup_dir
        with self._guard:
            if self._lock is None:
                return
            if not backup_dir.is_dir():
                try:
                    backup_dir.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    log.error("backup_dir_missing", path=str(backup_dir), error=str(exc))
                    return
                log.warning("backup_dir_recreated", path=str(backup_dir))
            elif self._lock.held():
                return
            elif self._health.current().claim_lost is None:
                log.warning("daemon_lock_lost", path=str(backup_dir))
            self._lock.release()
            try:
                self._lock.acquire()
            except SidecarError as exc:
                if self._health.current().claim_lost is None:
                    log.error("backup_dir_claim_lost", path=str(backup_dir), error=str(exc))
                self._health.set_claim_lost(
                    f"{exc}: this daemon lost its lock and runs no scheduled backup, prune, "
                    "scrub or drill until it can take it back"
                )
                return
            log.warning("daemon_lock_retaken", path=str(backup_dir))
            self._health.set_claim_lost(None)
