"""What the upload job checks of each pending archive, so that only a sound, well-named archive
ever becomes a confirmed offsite copy.

- **Its name** (``admits``, before anything is sent). Only an archive whose name follows the
  archiver's rule (1-128 of A-Z a-z 0-9 . _ - starting with a letter or digit) becomes an
  object: the offsite keys use that same rule, and a restore from offsite finds archives by
  it. A file planted or renamed in the backup directory as ``-x1.tar.gz`` or ``sp ace.tar.gz``
  is refused on its own (logged ``offsite_upload_refused`` once per name, counted as reason
  ``name`` at every pass while it is there); the other archives go on. Renamed to a valid
  name, it is uploaded at the next pass. An archive whose metadata names another backup (a
  link, copy or rename of its archive, or a file overwritten with it: ``copy_of``) is never an
  object under its own name: a restore by that name would restore the other backup. The
  original's own file carries it offsite (upload_candidates leaves such a copy out); without
  it, the copy is refused as reason ``copy`` until renamed back.
- **Its bytes** (``checking``, during the upload). The archiver's read check (every gzip CRC,
  the tar structure, every database member's size and SHA-256 against the metadata) runs on
  its own thread while the bytes go out, and ``Store.upload`` writes the checksum record only
  once it passed (its ``vet``): the check costs no upload time where the upload is the slower,
  and a rotten archive's object is never confirmed (it is deleted at once). Results are
  cached by file identity (device, inode, size, mtime) in the daemon's cache, the prune's:
  the daemon's backup read its archive back before it published the outcome that wakes the
  uploader (jobs/backup.py), so the upload does not read it again (nor does a retried one).
  A passed check remembers the SHA-256 of the file's bytes it read, and ``vet`` requires the
  bytes sent to hash to it (rot keeps the identity); when they differ the archive is read
  again before anything is confirmed. An archive that fails
  is marked damaged (``found_by: offsite upload``, the scrub's marker: `list` shows it
  damaged, retention neither deletes it nor counts it, and it is no longer pending) and
  counted as reason ``damaged``.

- **That it is still there** (``upload``). The policy's prune may delete an archive between
  the pass's listing and its upload (or between two attempts of it): the upload then finds
  no file, or the file is gone when the record would be written (its read check cannot vouch
  for the bytes sent any more). That archive is skipped (logged ``offsite_upload_skipped`` at
  info, not a failure of the pass, the other archives go on) and whatever it sent is removed
  (the unconfirmed object, unfinished multipart uploads): never a confirmed copy.

- **Its key** (``upload``). An entry planted at the archive's object key that the store will
  not write over (a directory, a link on a file:// store) refuses that archive alone (reason
  ``unsafe``, logged once), never the whole pass: the other archives go on.

Each refusal of a pass is kept (``refused``) so the pass reports the last one as its error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import structlog

from backup_sidecar import archiver, jobs, offsite
from backup_sidecar.errors import (
    CorruptArchiveError,
    OffsiteObjectCorruptError,
    OffsiteUnsafeEntryError,
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
    """One archive's read check for ``Store.upload``'s ``vet``: a passed check of this version of
    the file already cached (the backup read it back moments ago) is used as it is,
    else the check runs on its own thread while the bytes go out. Either way ``vet`` also
    requires the bytes sent to hash to the bytes the check read (rot keeps a file's identity);
    when they differ the archive is read again. CorruptArchiveError when the check failed."""

    def __init__(
        self,
        checks: archiver.ReadCheckCache,
        archive: archiver.ArchiveInfo,
        stop: Callable[[], bool],
    ) -> None:
        self.archive = archive
        self.fault: str | None = None
        #: The check found no file (pruned before it opened it): its bytes were never checked.
        self.vanished = False
        self._checks = checks
        self._stop = stop
        self._error: BaseException | None = None
        self._done = threading.Event()  # the upload ended first: the check may stop
        self._thread: threading.Thread | None = None
        if checks.passed_sha256(archive.path) is None:
            self._thread = threading.Thread(target=self._run, name="offsite-check", daemon=True)
            self._thread.start()

    def _run(self, recheck: bool = False) -> None:
        run = self._checks.recheck if recheck else self._checks.check
        try:
            self.fault = run(
                self.archive.path, should_stop=lambda: self._stop() or self._done.is_set()
            )
        except FileNotFoundError:
            self.vanished = True  # pruned before it was read: ``vet`` refuses to confirm it
        except Exception as exc:  # noqa: BLE001 (handed to the uploading thread by ``vet``)
            self._error = exc

    def vet(self, sent_sha256: str) -> None:
        if self._thread is not None:
            self._thread.join()
        self._raise()
        checked = self._checks.passed_sha256(self.archive.path)
        if checked is None and (self.vanished or not os.path.lexists(self.archive.path)):
            path = str(self.archive.path)
            raise FileNotFoundError(errno.ENOENT, "gone before it was read-checked", path)
        if checked is not None and checked != sent_sha256:
            self._run(recheck=True)  # the bytes sent are not the bytes checked: read again
            self._raise()
            checked = self._checks.passed_sha256(self.archive.path)
        if checked is not None and checked != sent_sha256:
            raise OffsiteObjectCorruptError(
                self.archive.path.name, "the archive's bytes changed while it was sent"
            )

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error
        if self.fault is not None:
            raise CorruptArchiveError(self.archive.name, self.fault)

    def finish(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()


class UploadGate:
    """The per-archive checks of one uploader (see the module docstring)."""

    def __init__(
        self, *, families: MetricFamilies, checks: archiver.ReadCheckCache | None = None
    ) -> None:
        self._families = families
        self._checks = checks or archiver.ReadCheckCache()  # the daemon's: the prune's results
        self._told: set[str] = set()
        #: This pass's refusals, one line each (cleared by ``begin_pass``).
        self.refused: list[str] = []

    def begin_pass(self) -> None:
        self.refused = []

    def admits(self, archive: archiver.ArchiveInfo) -> bool:
        """True when ``archive``'s name can be an object and names the backup it holds; else it
        was reported and is skipped."""
        file_name = archive.path.name
        if archive_name(file_name) is None:
            why = (
                f"archive file {file_name!r} is not uploaded: its name is not a valid archive "
                "name (1-128 of A-Z a-z 0-9 . _ - starting with a letter or digit); rename it"
            )
            reason = "name"
        elif archive.copy_of is not None:
            why = (
                f"archive file {file_name!r} is not uploaded: its metadata names backup "
                f"{archive.copy_of!r} (a copy, rename or overwrite of that backup's archive); "
                f"rename it back to {archive.copy_of}{archiver.ARCHIVE_SUFFIX}"
            )
            reason = "copy"
        else:
            return True
        if file_name not in self._told:
            log.error("offsite_upload_refused", archive=file_name, reason=why)
            self._told.add(file_name)
        self._refuse(reason, why)
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
        """``store.upload`` of ``archive``, read-checked meanwhile; None when it was rotten or
        is gone (pruned meanwhile)."""
        up: offsite.Uploaded | None = None
        name = archive.path.name + (".age" if recipients else "")
        try:
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
        except FileNotFoundError as exc:
            if os.fsdecode(exc.filename or "") != str(archive.path) or os.path.lexists(
                archive.path
            ):
                raise
            self._vanished(store, lease, archive, object_name=name)
            return None
        except OffsiteUnsafeEntryError as exc:  # e.g. a directory planted at its key
            why = f"archive {archive.name!r} not uploaded: {exc}"
            if name not in self._told:
                log.error("offsite_upload_refused", archive=archive.path.name, reason=why)
                self._told.add(name)
            self._refuse("unsafe", why)
            return None
        return None if check.fault is not None else up

    def _vanished(
        self,
        store: offsite.Store,
        lease: offsite.Lease,
        archive: archiver.ArchiveInfo,
        *,
        object_name: str,
    ) -> None:
        """``archive`` is gone from the backup directory (the prune): nothing of it is left."""
        log.info(
            "offsite_upload_skipped",
            archive=archive.path.name,
            reason="the archive was deleted locally (pruned) before it was sent",
        )
        try:
            store.delete(object_name, lease=lease)  # sent, never confirmed: not left behind
            store.abort_orphaned_uploads(lease=lease)  # the sole uploader: only its parts
        except (SidecarError, OSError) as exc:  # the next pass's orphan cleanup, retention
            log.warning("offsite_delete_failed", object=object_name, error=str(exc))

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
