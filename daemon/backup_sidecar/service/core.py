"""The daemon: composes scheduler, health watcher, metrics endpoint and control socket.

Lifecycle (after uvicorn): signal handlers only set flags. Start-up takes the backup
directory's lock, removes leftovers of a crash, logs every resolved path once, then starts the
parts in an ExitStack. Shutdown runs in order: stop scheduling, stop accepting control
requests, let running operations finish up to the grace time, then abort them (an aborted
backup leaves no archive; an aborted restore has either not started writing or rolls back).
A second SIGTERM/SIGINT exits at once. SIGHUP reloads the YAML; an invalid file is logged and
the old policies keep running.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import structlog
from prometheus_client import CollectorRegistry

from backup_sidecar import __version__, archiver, jobs
from backup_sidecar.control.server import ControlServer
from backup_sidecar.errors import SidecarError
from backup_sidecar.service.handler import ControlHandler, DaemonState
from backup_sidecar.service.health import DRILL_POLICY, HealthState
from backup_sidecar.service.httpserver import MetricsServer
from backup_sidecar.service.metrics import Metrics
from backup_sidecar.service.scheduler import SKIP_LATE, PolicyScheduler
from backup_sidecar.service.subscribers import HealthSubscriber, MetricsSubscriber
from backup_sidecar.service.successes import SuccessLedger
from backup_sidecar.service.watcher import HealthWatcher, damaged_newest, newest_verified
from backup_sidecar.settings import ResolvedPaths, Settings, load_configuration
from backup_sidecar.settings.model import SCRUB_JOB

log = structlog.get_logger(__name__)

#: A scheduled backup waits this long for a restore or CLI backup holding its databases
#: (skipping would leave a whole period without a backup); then it is counted as failed.
SCHEDULED_WAIT_S = 600.0


class _Waker:
    """Wakes the main loop from any thread or from a signal handler, through a pipe.

    Not a threading.Event: its set() takes a lock, and CPython runs a signal handler in the main
    thread between two bytecodes, possibly while that thread holds the same lock in wait() or
    clear(). The handler then waits for the lock forever. That was seen as a daemon that ignored
    SIGHUP and SIGTERM while its next scheduled backup hung in the same set(). A write to a
    non-blocking pipe takes no lock; a full pipe already holds a wake-up.
    """

    def __init__(self) -> None:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._r = os.fdopen(r, "rb", buffering=0)
        self._w = os.fdopen(w, "wb", buffering=0)

    def set(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self._w.write(b"\0")

    def wait(self, timeout: float) -> None:
        """Return after a set() (earlier ones included) or ``timeout`` seconds."""
        select.select([self._r], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while self._r.read(4096):
                pass


def reconcile_sequence(backup_dir: Path, archives: list[archiver.ArchiveInfo]) -> None:
    """Raise the directory's creation-sequence counter to the highest sequence on disk (it is a
    cache, never trusted alone: see archiver/sequence.py)."""
    seen = max((a.sequence for a in archives if a.sequence is not None), default=0)
    try:
        if archiver.reconcile_sequence(backup_dir, seen=seen):
            log.warning("archive_sequence_raised", sequence=seen)
    except (SidecarError, OSError) as exc:
        log.warning("archive_sequence_unchecked", error=str(exc))


def _start_only_changes(
    old: Settings, old_paths: ResolvedPaths, new: Settings, new_paths: ResolvedPaths
) -> list[str]:
    """Keys whose new value would only take effect at start; a reload must not pretend to apply
    them (a moved backup_dir would even escape the one-daemon-per-directory lock)."""
    changed = ["backup_dir"] if old_paths.backup_dir != new_paths.backup_dir else []
    changed += [key for key in ("control", "metrics") if getattr(old, key) != getattr(new, key)]
    if old.health.interval != new.health.interval:
        changed.append("health.interval")
    return changed


class Service:
    """One running sidecar. `run()` blocks until a stop signal and returns the exit code."""

    def __init__(
        self,
        settings: Settings,
        paths: ResolvedPaths,
        *,
        config_path: Path | None,
        environ: Mapping[str, str],
        cwd: Path,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.paths = paths
        self._config_path = config_path
        self._environ = environ
        self._cwd = cwd
        self.runtime = jobs.Runtime.from_settings(settings, paths)
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(
            self.registry,
            version=__version__,
            policies=settings.policies,
            databases=settings.databases,
            process_metrics=True,
        )
        self.metrics.objectives(settings.health.max_backup_age)
        self.health = HealthState()
        self.ledger = SuccessLedger(self.metrics)
        #: Every job's outcome reaches the metrics and /healthz through this one publisher.
        self.outcomes = jobs.Outcomes(
            MetricsSubscriber(self.metrics),
            HealthSubscriber(self.health, configured=self._configured),
        )
        #: Held while a reload swaps the configuration and while the watcher publishes, so a
        #: check begun before a reload never republishes what the reload removed.
        self.publishing = threading.Lock()
        #: Read-check results of the prunes and scrubs, kept while the daemon runs.
        self.read_checks = archiver.ReadCheckCache()
        #: The one catalog of the backup directory's archives (its backup_dir never changes on
        #: reload), shared by the watcher, the ledger, the scheduler's catch-up, the jobs and
        #: the control socket: each archive's metadata is read once, not once per reader.
        self.catalog = archiver.Catalog(self.runtime.backup_dir)
        self._catalog_logged = -1
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._wake = _Waker()
        # Set by signal handlers, which must take no lock (see _Waker); read by the main loop.
        self._stop_requested = False
        self._reload_requested = False
        self._signals = 0
        self._busy = threading.Condition()
        self._in_flight = 0
        self._dir_lock: archiver.DirectoryLock | None = None
        self._dir_guard = threading.Lock()
        self.scheduler: PolicyScheduler | None = None
        self._state: DaemonState | None = None
        self._control: ControlServer | None = None
        self.bound_metrics: tuple[str, int] | None = None

    # -- operations in flight ------------------------------------------------------------
    @contextlib.contextmanager
    def track(self, what: str) -> Iterator[None]:
        with self._busy:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._busy:
                self._in_flight -= 1
                self._busy.notify_all()

    def _wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._busy:
            while self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._busy.wait(left)
        return True

    # -- scheduled work ------------------------------------------------------------------
    def run_policy(self, policy: str) -> None:
        """A scheduled job: back up and prune one policy (or run the restore drill)."""
        if self._stop.is_set():
            return
        with self.publishing:
            rt = self.runtime
            scheduled = policy in self.settings.scheduled_policies()
        if not scheduled:  # queued behind a busy worker before a reload removed it
            log.info("scheduled_run_dropped", policy=policy, reason="no longer scheduled")
            return
        with self.track(policy):
            self.ensure_backup_dir()
            lost = self.health.current().claim_lost
            if lost is not None:
                log.error("scheduled_run_refused", policy=policy, reason=lost)
                return
            if policy == DRILL_POLICY:
                self._drill(rt)
                return
            if policy == SCRUB_JOB:
                self._scrub(rt)
                return
            try:
                info = jobs.run_backup(
                    rt,
                    policy=policy,
                    effort=self._effort(rt),
                    outcomes=self.outcomes,
                    scheduled=True,
                    wait=SCHEDULED_WAIT_S,
                )
            except Exception as exc:  # a bug's exception too: /healthz shows the failure
                self._still_configured(policy)  # removed meanwhile: drop what it counted
                if not isinstance(exc, SidecarError):
                    raise  # a bug: the scheduler logs its traceback (scheduled_run_failed)
                return  # logged and published by the job
            jobs.prune_after_backup(
                rt,
                policy=policy,
                just_written=info.name,
                outcomes=self.outcomes,
                checks=self.read_checks,
                catalog=self.catalog,
            )
            self._still_configured(policy)  # removed meanwhile: drop what the prune counted
        self.archives_changed()

    def _effort(self, rt: jobs.Runtime) -> jobs.Effort:
        """A scheduled job's effort: the configured one, stopped when the grace time ends."""
        return dataclasses.replace(rt.effort, should_stop=self._abort.is_set)

    def _configured(self, policy: str) -> bool:
        with self.publishing:
            return policy in self.settings.policies

    def _still_configured(self, policy: str) -> bool:
        """False for a run that a reload removed the policy of while it ran: what it just
        counted is dropped again rather than left as a series nothing updates."""
        with self.publishing:
            if policy in self.settings.policies:
                return True
            self.metrics.forget(policies=[policy])
            return False

    def _run_skipped(self, policy: str, reason: str, scheduled: datetime) -> None:
        """The scheduler dropped a run: counted; one that never ran because no worker was free
        within a period is also a health reason until the policy's next run succeeds. (One
        dropped because the policy's own previous run was still going is not: that run reports
        its own outcome, and a run too slow for its schedule ends up overdue.)"""
        with self.publishing:
            if policy not in self.settings.policies:
                return
            self.metrics.run_missed(policy, reason)
            if reason == SKIP_LATE:
                self.health.run_missed(
                    policy,
                    f"the scheduled run at {scheduled.isoformat()} was skipped: no worker was "
                    "free within one period",
                )

    def seed_from_disk(self) -> None:
        """Every configured policy's last success, and each policy's archive count, from the
        archives on disk: at start, on every reload, after every operation that may have
        written or deleted archives, and (through the watcher) every health interval."""
        try:
            archives = self.scan_archives()
        except OSError as exc:
            log.error("backup_dir_unreadable", path=str(self.runtime.backup_dir), error=str(exc))
            return
        self.ledger.sync(archives, policies=self.settings.policies)
        self.metrics.archives_counted(Counter(a.policy for a in archives))
        damaged = [a for a in archives if a.status is archiver.ArchiveStatus.DAMAGED]
        self.metrics.damaged_counted(Counter(a.policy for a in damaged))
        self.health.set_damaged_newest(damaged_newest(archives))
        reconcile_sequence(self.runtime.backup_dir, archives)

    def scan_archives(self) -> list[archiver.ArchiveInfo]:
        """The catalog rescanned now (only new or changed archives are read), newest first;
        each change is logged once (archive_catalog_updated). OSError if unreadable."""
        snapshot = self.catalog.refresh()
        if snapshot.generation != self._catalog_logged:
            self._catalog_logged = snapshot.generation
            log.info(
                "archive_catalog_updated",
                archives=len(snapshot.archives),
                read=snapshot.read,
                dropped=snapshot.dropped,
                scans=self.catalog.scans,
                reads=self.catalog.reads,
            )
        return list(snapshot.archives)

    def archives_changed(self) -> None:
        """Publish the backup directory as it is now, after a backup, prune or restore: the
        archive counts read 0 after a first backup until the next health check."""
        with self.publishing:
            self.seed_from_disk()

    def _drill(self, rt: jobs.Runtime) -> None:
        try:
            newest = newest_verified(self.catalog.refresh().archives)
        except OSError:
            newest = {}
        if not any(p != archiver.PRE_RESTORE_POLICY for p in newest):
            # Nothing to drill yet: on a fresh directory the drill's catch-up may run before the
            # first backup. Missing backups are the overdue check's business, not a failed drill.
            log.info("restore_drill_skipped", reason=f"no verified archive in {rt.backup_dir}")
            return
        try:
            report = jobs.run_drill(
                rt, effort=self._effort(rt), outcomes=self.outcomes, catalog=self.catalog
            )
            ok = report.ok
        except SidecarError as exc:  # published by the job
            log.error("restore_drill_failed", error=str(exc))
            ok = False
        if not ok:
            self.archives_changed()  # a failed drill may have marked its archive damaged

    def _scrub(self, rt: jobs.Runtime) -> None:
        """A scheduled scrub; a failed one is a /healthz reason until one succeeds."""
        try:
            jobs.run_scrub(
                rt,
                checks=self.read_checks,
                effort=self._effort(rt),
                outcomes=self.outcomes,
                catalog=self.catalog,
            )
        except Exception as exc:  # logged and published by the job
            if not isinstance(exc, SidecarError):
                raise  # a bug: the scheduler logs its traceback (scheduled_run_failed)
        finally:
            self.archives_changed()  # markers written: damaged counts and /healthz at once

    def ensure_backup_dir(self) -> None:
        """Recreate a backup directory deleted under the running daemon, and claim it again
        (the claim's lock file went with the old directory, so a second daemon could start);
        likewise retake a lock file deleted or replaced under it. If another daemon took the
        new lock meanwhile, /healthz names it and no scheduled run writes until the claim is
        back (retried here every health interval)."""
        backup_dir = self.runtime.backup_dir
        with self._dir_guard:
            if self._dir_lock is None:
                return
            if not backup_dir.is_dir():
                try:
                    backup_dir.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    log.error("backup_dir_missing", path=str(backup_dir), error=str(exc))
                    return
                log.warning("backup_dir_recreated", path=str(backup_dir))
            elif self._dir_lock.held():
                return
            elif self.health.current().claim_lost is None:
                log.warning("daemon_lock_lost", path=str(backup_dir))
            self._dir_lock.release()
            try:
                self._dir_lock.acquire()
            except SidecarError as exc:
                if self.health.current().claim_lost is None:
                    log.error("backup_dir_claim_lost", path=str(backup_dir), error=str(exc))
                self.health.set_claim_lost(
                    f"{exc}: this daemon lost its lock and runs no scheduled backup, prune, "
                    "scrub or drill until it can take it back"
                )
                return
            log.warning("daemon_lock_retaken", path=str(backup_dir))
            self.health.set_claim_lost(None)

    def last_success(self, policy: str) -> datetime | None:
        if policy == SCRUB_JOB:
            # A scrub reads every archive: it waits for its schedule, never runs at start.
            return datetime.now(UTC)
        # The catalog as the daemon last published it (at start: just scanned), shared by every
        # policy's catch-up: not one listing of the directory per policy.
        if self.catalog.scans == 0:
            self.catalog.refresh()
        return newest_verified(self.catalog.snapshot().archives).get(policy)

    # -- signals and reload --------------------------------------------------------------
    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            os._exit(1)  # a second signal: the operator wants out now
        self._stop_requested = True
        self._wake.set()

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._reload_requested = True
        self._wake.set()

    def reload(self) -> bool:
        """Re-read the configuration; keep the running policies if the new file is invalid."""
        try:
            settings, paths = load_configuration(
                self._config_path, environ=self._environ, cwd=self._cwd
            )
        except SidecarError as exc:
            log.error("config_reload_refused", error=str(exc))
            return False
        except Exception as exc:  # a bug's exception too: a reload never stops the daemon
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            log.error(
                "config_reload_refused",
                error=f"{self._config_path}: cannot be read as a configuration: {reason}",
                exc_info=True,
            )
            return False
        fixed = _start_only_changes(self.settings, self.paths, settings, paths)
        if fixed:
            log.error(
                "config_reload_refused",
                error=f"{self._config_path}: {', '.join(fixed)} can only change with a restart "
                "(directory lock, control socket, metrics port and watcher are set up at start)",
            )
            return False
        with self.publishing:
            removed = set(self.settings.policies) - set(settings.policies)
            dropped = set(self.settings.databases) - set(settings.databases)
            self.settings, self.paths = settings, paths
            self.runtime = jobs.Runtime.from_settings(settings, paths)
            if self._state is not None:
                self._state.runtime = self.runtime
            self.metrics.forget(policies=removed, databases=dropped)
            self.health.forget(policies=removed, databases=dropped)
            self.ledger.forget(removed)
            self.metrics.declare(policies=settings.policies, databases=settings.databases)
            self.metrics.objectives(settings.health.max_backup_age)
            self.seed_from_disk()
        if self.scheduler is not None:
            self.scheduler.reschedule(settings.scheduled_policies(), timezone=settings.tzinfo)
        log.info("config_reloaded", policies=sorted(settings.policies))
        return True

    # -- the main loop -------------------------------------------------------------------
    def run(self, *, install_signals: bool = True) -> int:
        if install_signals:
            signal.signal(signal.SIGTERM, self._on_stop_signal)
            signal.signal(signal.SIGINT, self._on_stop_signal)
            signal.signal(signal.SIGHUP, self._on_hup)
        with ExitStack() as stack:
            self._start(stack)
            while not self._stop.is_set():
                self._wake.wait(timeout=1.0)
                if self._stop_requested:
                    self._stop.set()
                elif self._reload_requested:
                    self._reload_requested = False
                    self.reload()
            self._shutdown(stack)
        log.info("daemon_stopped")
        return 0

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _start(self, stack: ExitStack) -> None:
        rt = self.runtime
        rt.backup_dir.mkdir(parents=True, exist_ok=True)
        archiver.check_backup_dir(rt.backup_dir)  # a planted link: refuse before touching it
        lock = archiver.DirectoryLock(rt.backup_dir)
        lock.acquire()
        stack.callback(lock.release)
        self._dir_lock = lock
        jobs.clean_leftovers(rt)
        for key, source in self.paths.sources.items():
            path = rt.backup_dir if key == "backup_dir" else rt.databases[key.split(".", 1)[1]].path
            log.info("path_resolved", key=key, path=str(path), source=source)
        self.seed_from_disk()
        cfg = self.settings
        if cfg.metrics.enabled:
            server = MetricsServer(registry=self.registry, health=self.health)
            self.bound_metrics = server.start(cfg.metrics.host, cfg.metrics.port)
            stack.callback(server.stop)
            log.info("metrics_listening", host=self.bound_metrics[0], port=self.bound_metrics[1])
        watcher = HealthWatcher(self, interval=cfg.health.interval.total_seconds())
        watcher.start()
        stack.callback(watcher.stop)
        self.scheduler = PolicyScheduler(
            cfg.scheduled_policies(),
            timezone=cfg.tzinfo,
            run_policy=self.run_policy,
            last_success=self.last_success,
            on_skipped=self._run_skipped,
        )
        self.scheduler.start()
        stack.callback(self._stop_scheduler)
        if cfg.control.enabled:
            state = DaemonState(
                runtime=rt,
                outcomes=self.outcomes,
                health=self.health,
                next_runs=self.scheduler.next_run_times,
                should_stop=self._abort.is_set,
                track=self.track,
                archives_changed=self.archives_changed,
                read_checks=self.read_checks,
                catalog=self.catalog,
            )
            self._state = state
            control = ControlServer(
                cfg.control.socket,
                handler=ControlHandler(state),
                mode=cfg.control.mode_bits,
                stop_timeout_s=cfg.grace_period.total_seconds() + 30.0,
                count=self.metrics.control_request,
            )
            control.start()
            self._control = control
            stack.callback(control.stop)
        log.info("daemon_started", version=__version__, policies=sorted(cfg.policies))

    def _stop_scheduler(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)

    def _shutdown(self, stack: ExitStack) -> None:
        """Stop scheduling and accepting, give running work the grace time, then abort it."""
        grace = self.settings.grace_period.total_seconds()
        log.info("daemon_stopping", grace_s=grace, in_flight=self._in_flight)
        aborter = threading.Timer(grace, self._abort_running)
        aborter.daemon = True
        aborter.start()
        try:
            self._stop_scheduler()
            if self._control is not None:
                self._control.stop()  # closes the listener, waits for in-flight requests
            if not self._wait_idle(grace):
                self._abort_running()
                self._wait_idle(30.0)
        finally:
            aborter.cancel()

    def _abort_running(self) -> None:
        if not self._abort.is_set() and self._in_flight:
            log.warning("grace_period_expired", action="aborting running operations")
        self._abort.set()
