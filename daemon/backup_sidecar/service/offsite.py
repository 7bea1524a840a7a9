"""The offsite upload job: every verified local archive not yet confirmed offsite is uploaded,
on its own thread, never inside a backup.

A finished backup only wakes the thread (``notify``), so a slow or dead endpoint never delays
or fails the local backup. Each pass takes (or renews) the prefix's lease; when another sidecar
holds it, this one logs ``offsite_read_only`` once and tries again later. Right after taking
the lease it clears unfinished uploads left by a killed predecessor. What is pending is derived
from the bucket on every pass (local verified archives minus confirmed objects made from them:
the record's source SHA-256, ``offsite_sums.py``), so pending uploads survive a restart without
a local state file; a same-named object made from other bytes is reported
(``offsite_source_mismatch``, failure reason ``mismatch``), never counted nor overwritten.
A failed pass is retried after 5 s,
doubling up to ``retry_s`` (the library's own retries with backoff run inside each request).
A reload wakes the thread (a changed or removed section: the old store closed, its lease
released); the series are rebuilt from the bucket at each pass. Stopping abandons an upload
in flight and releases the lease. Whether the copies lag: ``service/offsite_health.py``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from datetime import UTC, datetime

import structlog

from backup_sidecar import archiver, jobs, offsite
from backup_sidecar.errors import OffsiteUploadAbandonedError, SidecarError
from backup_sidecar.jobs.offsite import open_store
from backup_sidecar.jobs.offsite_prune import upload_candidates
from backup_sidecar.jobs.outcomes import BackupFinished, Outcome
from backup_sidecar.jobs.runtime import OffsiteSpec
from backup_sidecar.service.health import HealthState
from backup_sidecar.service.live import LiveConfig
from backup_sidecar.service.metric_families import MetricFamilies
from backup_sidecar.service.metrics import Metrics
from backup_sidecar.service.offsite_gate import UploadGate
from backup_sidecar.service.offsite_health import OffsiteLag
from backup_sidecar.service.offsite_pages import PageUploads
from backup_sidecar.service.offsite_passes import failure_reason, renewing, same_store
from backup_sidecar.service.offsite_prune import prune_pass
from backup_sidecar.service.offsite_series import OffsiteSeries
from backup_sidecar.service.offsite_state import UploaderState
from backup_sidecar.service.offsite_sums import MismatchReport, SourceSums, split
from backup_sidecar.service.offsite_verify import OffsiteVerifier

log = structlog.get_logger(__name__)


class OffsiteUploader:
    """The upload thread of one daemon (idle while no `offsite` section is configured)."""

    def __init__(
        self,
        *,
        live: LiveConfig,
        families: MetricFamilies,
        catalog: archiver.Catalog,
        environ: Mapping[str, str],
        health: HealthState | None = None,
        retry_s: float = 60.0,
        read_checks: archiver.ReadCheckCache | None = None,
    ) -> None:
        self._live = live
        self._families = families
        self._catalog = catalog
        self._environ = environ
        self._retry_s = retry_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._spec: OffsiteSpec | None = None
        self._store: offsite.Store | None = None
        self._lease: offsite.Lease | None = None
        self._told_read_only = False
        self._confirmed: set[str] = set()  # at the last listing that answered
        self._reload = threading.Event()
        self._failures = 0
        #: Set to abandon the upload in flight: stopping, or a reload changed the section.
        self._abandon = threading.Event()
        #: The lag verdict (``check`` also runs on the health watcher's interval).
        self.lag = OffsiteLag(live=live, health=health or HealthState(), families=families)
        #: What the last pass learned (the control socket's `offsite_status`).
        self.state = UploaderState()
        self._series = OffsiteSeries(families=families, state=self.state, lag=self.lag)
        self._sums = SourceSums()
        self._pages = PageUploads(families=families, sums=self._sums, series=self._series)
        self._mismatches = MismatchReport(families.offsite_failures)
        self._gate = UploadGate(families=families, checks=read_checks)
        #: The scheduled offsite verify (started with the daemon's uploader, in ``start_for``).
        self.verifier: OffsiteVerifier | None = None

    @classmethod
    def start_for(
        cls,
        live: LiveConfig,
        metrics: Metrics,
        catalog: archiver.Catalog,
        outcomes: jobs.Outcomes,
        environ: Mapping[str, str],
        health: HealthState,
        read_checks: archiver.ReadCheckCache | None = None,
    ) -> OffsiteUploader:
        """The daemon's uploader, subscribed to its outcomes and started."""
        uploader = cls(
            live=live, families=metrics.families, catalog=catalog, environ=environ,
            health=health, read_checks=read_checks,
        )  # fmt: skip
        outcomes.subscribe(uploader.notify)
        uploader.start()
        # The scheduled offsite verify runs beside it on its own thread (stopped with it).
        uploader.verifier = OffsiteVerifier(
            live=live, families=metrics.families, environ=environ, outcomes=outcomes
        )
        uploader.verifier.start()
        return uploader

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="offsite-upload", daemon=True)
        self._thread.start()

    def notify(self, event: Outcome) -> None:
        """An outcome subscriber: a successful backup wakes the upload thread (nothing more)."""
        if isinstance(event, BackupFinished) and event.ok:
            self._wake.set()

    def reloaded(self) -> None:
        """A reload: a pass now (a changed or removed section: the old lease released first)."""
        self._reload.set()
        if not same_store(self._live.now.runtime.offsite, self._spec):
            self._abandon.set()
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread (an upload in flight abandoned, its parts aborted), free the lease."""
        self._stop.set()
        self._abandon.set()
        self._wake.set()
        if self.verifier is not None:
            self.verifier.stop(timeout)
        if self._thread is not None:
            self._thread.join(timeout)
        if self._thread is None or not self._thread.is_alive():
            self._close()

    def _close(self) -> None:
        """Release the lease and drop the store (a reload changed or removed the section)."""
        if self._lease is not None:
            try:
                self._lease.release()
            except (SidecarError, OSError) as exc:
                log.warning("offsite_lease_release_failed", error=str(exc))
        self._store, self._lease, self._spec = None, None, None
        self._confirmed.clear()

    def _loop(self) -> None:
        failed = 0  # passes failed in a row: retried after 5 s, doubling up to retry_s
        while not self._stop.is_set():
            self._wake.clear()
            before = self._failures
            try:
                self.sync()
            except Exception as exc:  # a bug: logged, retried later, never the daemon's end
                log.exception("offsite_upload_failed", error=str(exc))
                self._families.offsite_failures.labels("other").inc()
                self._failures += 1
            failed = failed + 1 if self._failures > before else 0
            wait = min(self._retry_s, 5.0 * 2 ** (failed - 1)) if failed else self._retry_s
            self._wake.wait(timeout=wait)

    def _open(self, spec: OffsiteSpec) -> tuple[offsite.Store, offsite.Lease]:
        if self._store is None or self._lease is None or not same_store(spec, self._spec):
            self._close()
            self.state.reset(spec.url)  # before: a store that cannot be opened is its failure
            self._store = open_store(spec, environ=self._environ)
            self._lease = offsite.Lease(self._store, ttl=spec.lease_ttl)
            self._told_read_only = False
        self._spec = spec  # keep, max_age or the keys may have changed: the store is the same
        return self._store, self._lease

    @property
    def environ(self) -> Mapping[str, str]:
        """Where the store's credentials come from (restores from offsite use it too)."""
        return self._environ

    def sync(self) -> int:
        """One pass: upload every pending archive; how many were confirmed."""
        rt = self._live.now.runtime
        spec = rt.offsite
        if self._reload.is_set() or spec is None:
            self._reload.clear()
            if not self._stop.is_set():
                self._abandon.clear()
            if not same_store(spec, self._spec):
                self._close()
                self._series.reset()
        try:
            done = 0 if spec is None else self._sync(rt, spec)
        except OffsiteUploadAbandonedError as exc:
            log.info("offsite_upload_abandoned", error=str(exc))
            return 0
        except (SidecarError, OSError) as exc:
            log.warning("offsite_upload_failed", error=str(exc), reason=failure_reason(exc))
            self._families.offsite_failures.labels(failure_reason(exc)).inc()
            self._failures += 1
            self.state.failed(str(exc), datetime.now(UTC).timestamp())
            if spec is not None:  # the store did not answer: pending ages on what is known
                with contextlib.suppress(SidecarError, OSError):
                    suffix = ".age" if spec.recipients else ""
                    kept = upload_candidates(self._local(rt), spec.keep)
                    self._series.waiting(  # archives, then incremental backups
                        [a for a in kept if a.path.name + suffix not in self._confirmed]
                        + self._pages.unconfirmed(rt, spec)
                    )
            return 0
        finally:
            with self._live.publishing:
                self.lag.check()
        if spec is not None and self._gate.refused:  # the pass went past them; still its error
            self.state.failed(self._gate.refused[-1], datetime.now(UTC).timestamp())
        elif spec is not None:
            self.state.passed(datetime.now(UTC).timestamp())
        return self.verifier.confirmed(done) if self.verifier is not None else done

    def _local(self, rt: jobs.Runtime) -> list[archiver.ArchiveInfo]:
        """The verified local archives, newest first."""
        return [a for a in jobs.listing(rt, self._catalog) if a.status == "verified"]

    def _sync(self, rt: jobs.Runtime, spec: OffsiteSpec) -> int:
        store, lease = self._open(spec)
        self._gate.begin_pass()
        held = lease.valid_for > 0
        verdict = lease.renew()
        suffix = ".age" if spec.recipients else ""
        listed = store.list(encrypted_only=bool(spec.recipients)).objects
        local = self._local(rt)
        candidates = upload_candidates(local, spec.keep)  # older ones offsite retention drops
        found = split(reversed(candidates), listed, suffix=suffix, sums=self._sums)
        pending, confirmed = found.pending, found.confirmed
        self._mismatches.report(found.mismatched, state=self.state)
        self._confirmed = set(confirmed)
        left = [*pending, *(m.archive for m in found.mismatched)]  # not offsite
        pages = self._pages.listed(  # publishes the series of archives and incremental backups
            rt, store, spec, local=local, confirmed=confirmed, left=left, archives=listed
        )
        holder = verdict.who or (verdict.holder.describe() if verdict.holder else "unknown")
        self.state.verdict(writable=verdict.writable, holder=None if verdict.writable else holder)
        self.lag.read_only(verdict.read_only_reason(store.url))
        if not verdict.writable:
            if not self._told_read_only:
                log.warning("offsite_read_only", url=store.url, holder=holder)
                self._told_read_only = True
            return 0
        self._told_read_only = False
        if not held:  # just taken: clear what a killed predecessor left unfinished
            aborted = store.abort_orphaned_uploads(lease=lease)
            if aborted:
                log.info("offsite_orphans_aborted", url=store.url, count=aborted)
        recipients = offsite.parse_recipients(list(spec.recipients)) if spec.recipients else ()
        done = self._pages.upload(  # incremental backups first (small, frequent)
            pages, rt=rt, store=store, lease=lease, recipients=recipients, abandon=self._abandon
        )
        for archive in pending:
            if self._abandon.is_set():
                break
            if not self._gate.admits(archive):
                continue  # an odd name: reported, the others go on
            if lease.valid_for < lease.ttl * 2 / 3:
                lease.renew()
            try:
                with renewing(lease, self._abandon):
                    up = self._gate.upload(
                        rt, store, lease, archive, recipients, cancel=self._abandon.is_set
                    )
            except OffsiteUploadAbandonedError:
                store.abort_orphaned_uploads(lease=lease)  # still ours: no part is left
                raise
            if up is None:
                continue  # rotten: its object deleted, the archive marked damaged, counted
            done += 1
            self._confirmed.add(up.name)
            self._families.offsite_upload_bytes.inc(up.size)
            left.remove(archive)
            self._series.uploaded(archive, up.name, datetime.now(UTC).timestamp(), left)
            log.info(
                "offsite_upload_completed", archive=archive.name, object=up.name, size=up.size,
                encrypted=up.encrypted, attempts=up.attempts,
            )  # fmt: skip
        if not self._abandon.is_set():
            prune_pass(
                store=store,
                lease=lease,
                rt=rt,
                spec=spec,
                families=self._families,
                reason=failure_reason,
            )
        return done
