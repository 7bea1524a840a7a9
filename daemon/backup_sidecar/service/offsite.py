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
A failed pass is retried after ``retry_s`` (the library's own retries with backoff run inside
each request).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime

import structlog

from backup_sidecar import archiver, jobs, offsite
from backup_sidecar.errors import SidecarError
from backup_sidecar.jobs.offsite import fetch_archive, open_store
from backup_sidecar.jobs.offsite_prune import origin_of, upload_candidates
from backup_sidecar.jobs.outcomes import BackupFinished, Outcome
from backup_sidecar.jobs.runtime import OffsiteSpec
from backup_sidecar.service.live import LiveConfig
from backup_sidecar.service.metric_families import MetricFamilies
from backup_sidecar.service.metrics import Metrics
from backup_sidecar.service.offsite_gate import UploadGate
from backup_sidecar.service.offsite_prune import prune_pass
from backup_sidecar.service.offsite_state import UploaderState
from backup_sidecar.service.offsite_sums import MismatchReport, SourceSums, split
from backup_sidecar.service.offsite_verify import OffsiteVerifier

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
def _renewing(lease: offsite.Lease) -> Iterator[None]:
    """Renew ``lease`` every third of its TTL on a thread while the block runs (a long
    upload): without it, an upload outlasting the lease could never be confirmed."""
    done = threading.Event()

    def renew() -> None:
        while not done.wait(lease.ttl / 3):
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


class OffsiteUploader:
    """The upload thread of one daemon (idle while no `offsite` section is configured)."""

    def __init__(
        self,
        *,
        live: LiveConfig,
        families: MetricFamilies,
        catalog: archiver.Catalog,
        environ: Mapping[str, str],
        retry_s: float = 60.0,
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
        self._last_success: dict[str, float] = {}
        #: What the last pass learned (the control socket's `offsite_status`).
        self.state = UploaderState()
        self._sums = SourceSums()
        self._mismatches = MismatchReport(families.offsite_failures)
        #: The scheduled offsite verify (started with the daemon's uploader, in ``start_for``).
        self.verifier: OffsiteVerifier | None = None
        self._gate = UploadGate(families=families)

    @classmethod
    def start_for(
        cls,
        live: LiveConfig,
        metrics: Metrics,
        catalog: archiver.Catalog,
        outcomes: jobs.Outcomes,
        environ: Mapping[str, str],
    ) -> OffsiteUploader:
        """The daemon's uploader, subscribed to its outcomes and started."""
        uploader = cls(live=live, families=metrics.families, catalog=catalog, environ=environ)
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

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (an upload in flight is abandoned unconfirmed) and free the lease."""
        if self.verifier is not None:
            self.verifier.stop(timeout)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._lease is not None and self._thread is not None and not self._thread.is_alive():
            try:
                self._lease.release()
            except (SidecarError, OSError) as exc:
                log.warning("offsite_lease_release_failed", error=str(exc))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.sync()
            except Exception as exc:  # a bug: logged, retried later, never the daemon's end
                log.exception("offsite_upload_failed", error=str(exc))
                self._families.offsite_failures.labels("other").inc()
            self._wake.wait(timeout=self._retry_s)

    def _open(self, spec: OffsiteSpec) -> tuple[offsite.Store, offsite.Lease]:
        if self._store is None or self._lease is None or spec != self._spec:
            if self._lease is not None:
                try:
                    self._lease.release()
                except (SidecarError, OSError) as exc:
                    log.warning("offsite_lease_release_failed", error=str(exc))
            self._store = open_store(spec, environ=self._environ)
            self._lease = offsite.Lease(self._store, ttl=spec.lease_ttl)
            self._spec = spec
            self._told_read_only = False
            self.state.reset(spec.url)
        return self._store, self._lease

    def fetch(self, rt: jobs.Runtime, ref: str | None) -> str:
        """Download the offsite archive ``ref`` (None: the newest confirmed) into the backup
        directory, checked and decrypted; its local archive name."""
        return fetch_archive(rt, ref, environ=self._environ).archive

    def sync(self) -> int:
        """One pass: upload every pending archive; how many were confirmed."""
        rt = self._live.now.runtime
        spec = rt.offsite
        if spec is None:
            return 0
        try:
            done = self._sync(rt, spec)
        except (SidecarError, OSError) as exc:
            log.warning("offsite_upload_failed", error=str(exc), reason=failure_reason(exc))
            self._families.offsite_failures.labels(failure_reason(exc)).inc()
            self.state.failed(str(exc), datetime.now(UTC).timestamp())
            return 0
        if self._gate.refused:  # the pass went on past them; they stay its error
            self.state.failed(self._gate.refused[-1], datetime.now(UTC).timestamp())
        else:
            self.state.passed(datetime.now(UTC).timestamp())
        return done

    def _seed_last_success(
        self, local: list[archiver.ArchiveInfo], confirmed: Mapping[str, datetime], suffix: str
    ) -> None:
        """Each policy's newest confirmed copy (the store's upload time), so the gauge is right
        after a restart too, before this process uploads anything."""
        for archive in local:
            modified = confirmed.get(archive.path.name + suffix)
            if modified is not None:
                self._confirmed_at(archive.policy, modified.timestamp(), archive.path.name + suffix)

    def _confirmed_at(self, policy: str, moment: float, obj: str) -> None:
        self.state.confirmed(policy, obj, moment)
        if moment > self._last_success.get(policy, 0.0):
            self._last_success[policy] = moment
            self._families.offsite_last_success.labels(policy).set(moment)

    def _sync(self, rt: jobs.Runtime, spec: OffsiteSpec) -> int:
        store, lease = self._open(spec)
        self._gate.begin_pass()
        held = lease.valid_for > 0
        verdict = lease.renew()
        suffix = ".age" if spec.recipients else ""
        listed = store.list(encrypted_only=bool(spec.recipients)).objects
        local = [a for a in jobs.listing(rt, self._catalog) if a.status == "verified"]
        candidates = upload_candidates(local, spec.keep)  # older ones offsite retention drops
        found = split(reversed(candidates), listed, suffix=suffix, sums=self._sums)
        pending, confirmed, waiting = found.pending, found.confirmed, found.waiting
        self._mismatches.report(found.mismatched)
        self._families.offsite_pending.set(waiting)
        self.state.pending(waiting)
        holder = verdict.holder.describe() if verdict.holder else "an unreadable lease"
        self.state.verdict(writable=verdict.writable, holder=None if verdict.writable else holder)
        self._seed_last_success(local, confirmed, suffix)
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
        done = 0
        for archive in pending:
            if self._stop.is_set():
                break
            if not self._gate.admits(rt, archive, should_stop=self._stop.is_set):
                continue  # an odd name or a damaged archive: reported, the others go on
            if lease.valid_for < lease.ttl * 2 / 3:
                lease.renew()
            with _renewing(lease):
                up = store.upload(
                    archive.path, lease=lease, recipients=recipients, origin=origin_of(archive)
                )
            done += 1
            self._families.offsite_upload_bytes.inc(up.size)
            self._confirmed_at(archive.policy, datetime.now(UTC).timestamp(), up.name)
            self._families.offsite_pending.set(waiting - done)
            self.state.pending(waiting - done)
            log.info(
                "offsite_upload_completed",
                archive=archive.name,
                object=up.name,
                size=up.size,
                encrypted=up.encrypted,
                attempts=up.attempts,
            )
        if not self._stop.is_set():
            prune_pass(
                store=store,
                lease=lease,
                rt=rt,
                spec=spec,
                families=self._families,
                reason=failure_reason,
            )
        return done
