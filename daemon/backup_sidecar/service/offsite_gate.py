"""What the upload job checks of each pending archive right before sending it.

- **Its name.** Only an archive whose name follows the archiver's rule (1-128 of A-Z a-z 0-9
  . _ - starting with a letter or digit) becomes an object: the offsite keys use that same
  rule, and a restore from offsite finds archives by it. A file planted or renamed in the
  backup directory as ``-x1.tar.gz`` or ``sp ace.tar.gz`` is refused on its own (logged
  ``offsite_upload_refused`` once per name, counted as reason ``name`` at every pass while it
  is there); the other archives go on. Renamed to a valid name, it is uploaded at the next
  pass.
- **Its bytes.** The archiver's read check (every gzip CRC, the tar structure, every database
  member's size and SHA-256 against the metadata), its result cached by file identity
  (device, inode, size, mtime) as the prune's: the uploader reads each version of an archive
  file once, before its first upload attempt (a retry after a failed upload does not read it
  again), so the copy that may one day be the only one is never a damaged one. An archive
  that fails is marked
  damaged (``found_by: offsite upload``, the scrub's marker: `list` shows it damaged, retention
  neither deletes it nor counts it, and it is no longer pending) and counted as reason
  ``damaged``.

Each refusal of a pass is kept (``refused``) so the pass reports the last one as its error.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from backup_sidecar import archiver, jobs
from backup_sidecar.errors import CorruptArchiveError, OperationAbortedError
from backup_sidecar.jobs.offsite import archive_name
from backup_sidecar.service.metric_families import MetricFamilies

log = structlog.get_logger(__name__)

FOUND_BY = "offsite upload"


class UploadGate:
    """The per-archive checks of one uploader (see the module docstring)."""

    def __init__(self, *, families: MetricFamilies) -> None:
        self._families = families
        self._checks = archiver.ReadCheckCache()
        self._told: set[str] = set()
        #: This pass's refusals, one line each (cleared by ``begin_pass``).
        self.refused: list[str] = []

    def begin_pass(self) -> None:
        self.refused = []

    def admits(
        self,
        rt: jobs.Runtime,
        archive: archiver.ArchiveInfo,
        *,
        should_stop: Callable[[], bool],
    ) -> bool:
        """True when ``archive`` may be uploaded now; else it was reported and is skipped."""
        file_name = archive.path.name
        if archive_name(file_name) is None:
            why = (
                f"archive file {file_name!r} is not uploaded: its name is not a valid archive "
                "name (1-128 of A-Z a-z 0-9 . _ - starting with a letter or digit); rename it"
            )
            if file_name not in self._told:
                log.error("offsite_upload_refused", archive=file_name, reason=why)
                self._told.add(file_name)
            self._refuse("name", why)
            return False
        try:
            fault = self._checks.check(archive.path, should_stop=should_stop)
        except (FileNotFoundError, OperationAbortedError):
            return False  # pruned since the listing, or the daemon stopping: nothing wrong
        if fault is not None:
            jobs.mark_damaged(rt, archive, fault, found_by=FOUND_BY)
            error = CorruptArchiveError(archive.name, fault)
            self._refuse("damaged", f"archive {archive.name!r} not uploaded: {error}")
            return False
        return True

    def _refuse(self, reason: str, why: str) -> None:
        self._families.offsite_failures.labels(reason).inc()
        self.refused.append(why)
