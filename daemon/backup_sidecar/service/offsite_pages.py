"""The upload job's page store part: each incremental backup's packs and manifests go offsite
through the archives' path (the same lease and renewal, retries, age recipients, checksum
records, metrics and lag series), before the archives of the same pass.

A pass lists ``pages/`` once (records cached by their ETag) and decides per backup inside the
offsite keep (``upload_candidates``, as for archives) whether it is confirmed
(jobs/offsite_pages.py: every database's manifest made from the local file, and every pack it
needs). For a pending backup, each database's packs not yet confirmed are sent first, each
read whole before it is sent (every page against its slot's SHA-256: ``check_pack``) and
confirmed only when the bytes sent hash to the bytes checked; its manifest goes last, its
record naming every pack it needs. Packs are immutable: a confirmed pack is never sent again.
A kill at any point leaves at most an unconfirmed object (no record): a backup never counts
as offsite before its manifest's record, written last, exists; an unfinished pack is sent
again by the next pass.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from backup_sidecar import archiver, jobs, offsite
from backup_sidecar.errors import (
    OffsiteUploadAbandonedError,
    OperationAbortedError,
    PackFormatError,
    PageStoreError,
)
from backup_sidecar.jobs.offsite_order import raise_sequence
from backup_sidecar.jobs.offsite_pages import (
    LocalPageBackup,
    PageUpload,
    check_pack,
    local_page_backups,
    offsite_state,
    prepare,
)
from backup_sidecar.jobs.offsite_prune import upload_candidates
from backup_sidecar.jobs.runtime import OffsiteSpec
from backup_sidecar.offsite.pagekeys import RecordCache, list_pages, manifest_object, pack_object
from backup_sidecar.service.metric_families import MetricFamilies
from backup_sidecar.service.offsite_health import watched_policies
from backup_sidecar.service.offsite_passes import renewing
from backup_sidecar.service.offsite_series import OffsiteSeries
from backup_sidecar.service.offsite_sums import SourceSums

log = structlog.get_logger(__name__)


@dataclass
class PagesView:
    """One pass's view of the page stores: local backups inside the keep, which are confirmed
    (by ``<name>.json[.age]``, the key the series use), which wait, and the listing."""

    local: list[archiver.ArchiveInfo] = field(default_factory=list)
    confirmed: dict[str, datetime] = field(default_factory=dict)
    pending: list[LocalPageBackup] = field(default_factory=list)
    waiting: list[archiver.ArchiveInfo] = field(default_factory=list)
    objects: dict[str, offsite.OffsiteObject] = field(default_factory=dict)
    #: Every local archive and incremental backup not offsite (the pass's pending gauge).
    left: list[archiver.ArchiveInfo] = field(default_factory=list)


class PageUploads:
    """The page store part of one uploader (see the module docstring)."""

    def __init__(
        self, *, families: MetricFamilies, sums: SourceSums, series: OffsiteSeries
    ) -> None:
        self._families = families
        self._sums = sums
        self._series = series
        self._records: RecordCache = {}
        self._told: set[str] = set()
        #: Series keys (``<name>.json[.age]``) of the backups confirmed at the last listing
        #: that answered, and since: what a pass that cannot reach the store goes on.
        self._confirmed: set[str] = set()

    def listed(
        self,
        rt: jobs.Runtime,
        store: offsite.Store,
        spec: OffsiteSpec,
        *,
        local: list[archiver.ArchiveInfo],
        confirmed: Mapping[str, datetime],
        left: list[archiver.ArchiveInfo],
        archives: Sequence[offsite.OffsiteObject] = (),
    ) -> PagesView:
        """What the store holds of the local incremental backups (one listing of ``pages/``),
        published with the archives' view (``local``, ``confirmed``, ``left``: not offsite,
        extended with the incremental backups that wait) as the pass's series. Before anything
        is uploaded, the sequence counter is raised past every copy listed (``archives`` and
        the page stores': jobs/offsite_order.py), so a rebuilt host's next backup is newest."""
        view = self._view(rt, store, spec)
        raise_sequence(rt.backup_dir, [*archives, *view.objects.values()], rt.keep)
        left.extend(view.waiting)
        self._series.listed(
            [*local, *view.local],
            {**confirmed, **view.confirmed},
            left,
            suffix=".age" if spec.recipients else "",
            policies=watched_policies(rt),
        )
        view.left = left
        self._confirmed = set(view.confirmed)
        return view

    def unconfirmed(self, rt: jobs.Runtime, spec: OffsiteSpec) -> list[archiver.ArchiveInfo]:
        """The incremental backups inside the offsite keep not confirmed at the last listing
        that answered (a pass that cannot reach the store: they keep aging toward the lag)."""
        suffix = ".age" if spec.recipients else ""
        infos = [b.info for b in local_page_backups(rt.backup_dir)]
        kept = upload_candidates(infos, spec.keep)
        return [i for i in kept if i.path.name + suffix not in self._confirmed]

    def _view(self, rt: jobs.Runtime, store: offsite.Store, spec: OffsiteSpec) -> PagesView:
        view = PagesView()
        backups = local_page_backups(rt.backup_dir)
        if not backups and not rt.incremental:  # (listed anyway: their sequences count)
            return view
        encrypted = bool(spec.recipients)
        listing = list_pages(store, encrypted_only=encrypted, cache=self._records)
        view.objects = {o.name: o for o in listing.objects}
        by_info = {id(b.info): b for b in backups}
        kept = upload_candidates([b.info for b in backups], spec.keep)
        suffix = ".age" if encrypted else ""
        for info in kept:
            backup = by_info[id(info)]
            view.local.append(info)
            try:
                state = offsite_state(
                    backup, view.objects, encrypted=encrypted, sha256=self._sums.sha256
                )
            except FileNotFoundError:
                continue  # deleted by local retention meanwhile: nothing to count or send
            if state.confirmed:
                assert state.modified is not None
                view.confirmed[info.path.name + suffix] = state.modified
                continue
            view.waiting.append(info)
            if state.mismatch is None:
                view.pending.append(backup)
            elif state.mismatch not in self._told:  # never overwritten: may be another's copy
                self._told.add(state.mismatch)
                log.warning("offsite_source_mismatch", archive=backup.name, object=state.mismatch)
                self._families.offsite_failures.labels("mismatch").inc()
        view.pending.reverse()  # oldest first, as the archives
        return view

    def upload(
        self,
        view: PagesView,
        *,
        rt: jobs.Runtime,
        store: offsite.Store,
        lease: offsite.Lease,
        recipients: Sequence[Any],
        abandon: threading.Event,
    ) -> int:
        """Send every pending backup of ``view``; how many were confirmed."""
        done = 0
        left = view.left
        for backup in view.pending:
            if abandon.is_set():
                break
            try:
                parts = prepare(rt.backup_dir, backup)
            except FileNotFoundError:
                continue  # deleted by local retention meanwhile
            except (PageStoreError, OSError, ValueError) as exc:
                log.warning("offsite_upload_skipped", archive=backup.name, error=str(exc))
                self._families.offsite_failures.labels("local").inc()
                continue
            if parts is None:
                continue  # a backup that never completed for one of its databases
            if lease.valid_for < lease.ttl * 2 / 3:
                lease.renew()
            try:
                with renewing(lease, abandon):
                    sent = sum(
                        self._part(store, lease, part, view, recipients, abandon.is_set)
                        for part in parts
                    )
            except OperationAbortedError:
                if not abandon.is_set():
                    raise
                raise OffsiteUploadAbandonedError(store.url, backup.name) from None
            except FileNotFoundError:
                continue  # deleted by local retention while it was being sent
            except PageStoreError as exc:  # a damaged pack or manifest: never confirmed
                log.error("offsite_upload_refused", archive=backup.name, reason=str(exc))
                self._families.offsite_failures.labels("damaged").inc()
                continue
            done += 1
            self._families.offsite_upload_bytes.inc(sent)
            if backup.info in left:
                left.remove(backup.info)
            name = backup.info.path.name + (".age" if recipients else "")
            self._confirmed.add(name)
            self._series.uploaded(backup.info, name, datetime.now(UTC).timestamp(), left)
            log.info(
                "offsite_upload_completed",
                archive=backup.name,
                object=name,
                size=sent,
                encrypted=bool(recipients),
                kind="incremental",
            )
        return done

    def _part(
        self,
        store: offsite.Store,
        lease: offsite.Lease,
        part: PageUpload,
        view: PagesView,
        recipients: Sequence[Any],
        cancel: Callable[[], bool],
    ) -> int:
        """One database's packs (those not confirmed yet), then its manifest: bytes sent."""
        encrypted = bool(recipients)
        sent = 0
        for pack_id in part.packs:
            name = pack_object(part.db, pack_id, encrypted=encrypted)
            have = view.objects.get(name)
            if have is not None and have.confirmed:
                continue  # immutable: uploaded once
            checked = check_pack(part.store, pack_id, should_stop=cancel)
            up = store.upload(
                part.pack_path(pack_id),
                lease=lease,
                name=name,
                recipients=recipients,
                cancel=cancel,
                vet=_same_bytes(checked, pack_id),
            )
            _confirm_same(store, lease, up, checked, pack_id)
            sent += up.size
        manifest = part.manifest_path
        name = manifest_object(part.db, part.manifest.name, encrypted=encrypted)
        checked = self._sums.sha256(manifest)
        up = store.upload(
            manifest,
            lease=lease,
            name=name,
            recipients=recipients,
            origin=part.origin,
            cancel=cancel,
            vet=_same_bytes(checked, f"manifest {part.manifest.name}"),
        )
        _confirm_same(store, lease, up, checked, f"manifest {part.manifest.name}")
        return sent + up.size


def _same_bytes(checked: str, what: str) -> Callable[..., None]:
    """``Store.upload``'s vet: the bytes sent must hash to those checked (when the store hands
    the source's SHA-256 to it); else the record is never written."""

    def vet(sent: str | None = None) -> None:
        if sent is not None and sent != checked:
            raise PackFormatError(what, "changed between its check and its upload")

    return vet


def _confirm_same(
    store: offsite.Store, lease: offsite.Lease, up: offsite.Uploaded, checked: str, what: str
) -> None:
    """The same check after the upload (for a store that does not hand the SHA-256 to vet):
    an object made from other bytes than those checked is deleted, never left confirmed."""
    if up.source_sha256 != checked:
        store.delete(up.name, lease=lease)
        raise PackFormatError(what, "changed between its check and its upload")
