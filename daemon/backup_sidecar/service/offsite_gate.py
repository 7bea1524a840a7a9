"""What the upload job checks of each pending archive, so that only a sound, well-named archive
ever becomes a confirmed offsite copy.

- **Its name** (``admits``, before anything is sent). Only an archive whose name follows the
  archiver's rule (1-128 of A-Z a-z 0-9 . _ - starting with a letter or digit) becomes an
  object: the offsite keys use that same rule, and a restore from offsite finds archives by
  it. A file planted or renamed in the backup directory as ``-x1.tar.gz`` or ``sp ace.tar.gz``
  is refused on its own (logged ``offsite_upload_refused`` once per name, counted as reason
  ``name`` at every pass while it is there); the other archives go on. Renamed to a valid
  name, it is uploaded at the next pass.
- **Its bytes** (``checking``, during the upload). The archiver's read check (every gzip CRC,
  the tar structure, every database member's size and SHA-256 against the metadata) runs on
  its own thread while the bytes go out, and ``Store.upload`` writes the checksum record only
  once it passed (its ``vet``): the check costs no upload time where the upload is the slower,
  and a rotten archive's object is never confirmed (it is deleted at once). Results are
  cached by file identity (device, inode, size, mtime) as the prune's: each version of an
  archive file is read once, a retried upload does not read it again. An archive that fails
  is marked damaged (``found_by: offsite upload``, the scrub's marker: `list` shows it
  damaged, retention neither deletes it nor counts it, and it is no longer pending) and
  counted as reason ``damaged``.

Each refusal of a pass is kept (``refused``) so the pass reports the last one as its error.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import structlog

from backup_sidecar import archiver, jobs, offsite
from backup_sidecar.errors import (
    CorruptArchiveError,
    OffsiteUploadAbandonedError,
    OperationAbortedError,
    SidecarError,
)
from backup_sidecar.jobs.offsite import archive_name
from backup_sidecar.jobs.offsite_prune import origin_of
from backup_sidecar.service.metric_families import MetricFamilies

log = structlog.get_logger(__name__)

FOUND_BY = "offsite upload"


class ReadCheck:
    """One archive's read check on its own thread; ``vet`` waits for it (Store.upload's hook)
    and raises CorruptArchiveError when it failed."""

    def __init__(
        self,
        checks: archiver.ReadCheckCache,
        archive: archiver.ArchiveInfo,
        stop: Callable[[], bool],
    ) -> None:
        self.archive = archive
        self.fault: str | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()  # the upload ended first: the check may stop
        self._thread = threading.Thread(
            target=self._run, args=(checks, stop), name="offsite-check", daemon=True
        )
        self._thread.start()

    def _run(self, checks: archiver.ReadCheckCache, stop: Callable[[], bool]) -> None:
        try:
            self.fault = checks.check(
                self.archive.path, should_stop=lambda: stop() or self._done.is_set()
            )
        except FileNotFoundError:
            pass  # pruned while it was being sent: the bytes read were whole
        except Exception as exc:  # noqa: BLE001 (handed to the uploading thread by ``vet``)
            self._error = exc

    def vet(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self.fault is not None:
            raise CorruptArchiveError(self.archive.name, self.fault)

    def finish(self) -> None:
        self._done.set()
        self._thread.join()


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

    def admits(self, archive: archiver.ArchiveInfo) -> bool:
        """True when ``archive``'s name can be an object; else it was reported and is skipped."""
        file_name = archive.path.name
        if archive_name(file_name) is not None:
            return True
        why = (
            f"archive file {file_name!r} is not uploaded: its name is not a valid archive "
            "name (1-128 of A-Z a-z 0-9 . _ - starting with a letter or digit); rename it"
        )
        if file_name not in self._told:
            log.error("offsite_upload_refused", archive=file_name, reason=why)
            self._told.add(file_name)
        self._refuse("name", why)
        return False

    def upload(
        self,
        rt: jobs.Runtime,
        store: offsite.Store,
        lease: offsite.Lease,
        archive: archiver.ArchiveInfo,
        recipients: Sequence[Any],
        *,
        cancel: Callable[[], bool],
    ) -> offsite.Uploaded | None:
        """``store.upload`` of ``archive``, read-checked meanwhile; None when it was rotten."""
        up: offsite.Uploaded | None = None
        name = archive.path.name + (".age" if recipients else "")
        with self.checking(
            rt, archive, store=store, lease=lease, object_name=name, should_stop=cancel
        ) as check:
            up = store.upload(
                archive.path,
                lease=lease,
                recipients=recipients,
                origin=origin_of(archive),
                cancel=cancel,
                vet=check.vet,  # the record is written only once the read check passed
            )
        return None if check.fault is not None else up

    @contextlib.contextmanager
    def checking(
        self,
        rt: jobs.Runtime,
        archive: archiver.ArchiveInfo,
        *,
        store: offsite.Store,
        lease: offsite.Lease,
        object_name: str,
        should_stop: Callable[[], bool],
    ) -> Iterator[ReadCheck]:
        """Read-check ``archive`` while the block uploads it (pass ``.vet`` to Store.upload).
        When the check fails, the block's CorruptArchiveError is taken here: the unconfirmed
        object is deleted, the archive marked damaged and the refusal counted; the caller
        sees ``.fault`` set."""
        check = ReadCheck(self._checks, archive, should_stop)
        try:
            yield check
        except CorruptArchiveError:
            if check.fault is None:
                raise
            self._damaged(rt, check, store=store, lease=lease, object_name=object_name)
        except OperationAbortedError:  # the check stopped with the uploader: not confirmed
            if not should_stop():
                raise
            raise OffsiteUploadAbandonedError(store.url, object_name) from None
        finally:
            check.finish()

    def _damaged(
        self,
        rt: jobs.Runtime,
        check: ReadCheck,
        *,
        store: offsite.Store,
        lease: offsite.Lease,
        object_name: str,
    ) -> None:
        assert check.fault is not None
        try:
            store.delete(object_name, lease=lease)  # sent, never confirmed: not left behind
        except (SidecarError, OSError) as exc:  # offsite retention removes it after a day
            log.warning("offsite_delete_failed", object=object_name, error=str(exc))
        jobs.mark_damaged(rt, check.archive, check.fault, found_by=FOUND_BY)
        error = CorruptArchiveError(check.archive.name, check.fault)
        self._refuse("damaged", f"archive {check.archive.name!r} not uploaded: {error}")

    def _refuse(self, reason: str, why: str) -> None:
        self._families.offsite_failures.labels(reason).inc()
        self.refused.append(why)
