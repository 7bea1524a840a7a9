"""The daemon: composes scheduler, health watcher, metrics endpoint and control socket.

Lifecycle (after uvicorn): signal handlers only set flags. Start-up takes the backup
directory's lock, removes leftovers of a crash, logs every resolved path once, then starts the
parts in an ExitStack. Shutdown runs in order: stop scheduling, stop accepting control requests
(the page refuses actions), let running operations finish up to the grace time, then abort them
(an aborted backup leaves no archive; an aborted restore has either not started writing or rolls
back). A second SIGTERM/SIGINT exits at once. SIGHUP reloads the YAML; an invalid file is
logged and the old policies keep running.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

import structlog
from prometheus_client import CollectorRegistry

from backup_sidecar import __version__, archiver, jobs
from backup_sidecar.control.server import ControlServer
from backup_sidecar.errors import SidecarError
from backup_sidecar.service.archives import ArchivesPublisher
from backup_sidecar.service.claim import BackupDirClaim
from backup_sidecar.service.handler import ControlHandler, DaemonState
from backup_sidecar.service.health import HealthState
from backup_sidecar.service.httpserver import MetricsServer
from backup_sidecar.service.inflight import InFlight
from backup_sidecar.service.live import Configured, LiveConfig
from backup_sidecar.service.maintenance import Maintainer
from backup_sidecar.service.metrics import Metrics
from backup_sidecar.service.notify import Notifier
from backup_sidecar.service.offsite import OffsiteUploader
from backup_sidecar.service.reload_rules import start_only_changes
from backup_sidecar.service.runs import ScheduledRuns
from backup_sidecar.service.scheduler import PolicyScheduler
from backup_sidecar.service.subscribers import HealthSubscriber, MetricsSubscriber
from backup_sidecar.service.successes import SuccessLedger
from backup_sidecar.service.ui_server import UiServer
from backup_sidecar.service.waker import Waker
from backup_sidecar.service.watcher import HealthWatcher
from backup_sidecar.settings import ResolvedPaths, Settings, load_configuration

log = structlog.get_logger(__name__)


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
        self._config_path = config_path
        self._environ = environ
        self._cwd = cwd
        #: The configuration now, swapped whole by a reload under its publishing lock.
        self.live = LiveConfig(Configured.of(settings, paths))
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(
            self.registry, version=__version__, policies=settings.policies,
            databases=settings.databases, process_metrics=True,
        )  # fmt: skip
        self.maintainer = Maintainer(live=self.live, registry=self.registry)
        self.metrics.objectives(settings.health.max_backup_age)
        self.health = HealthState()
        self.ledger = SuccessLedger(self.metrics)
        #: Every job's outcome reaches the metrics and /healthz through this one publisher.
        self.outcomes = jobs.Outcomes(
            MetricsSubscriber(self.metrics),
            HealthSubscriber(self.health, publish_if_configured=self.live.publish_if_configured),
            self.maintainer,  # a database's maintenance runs after its successful backups
        )
        #: Read-check results of the prunes and scrubs, kept while the daemon runs.
        self.read_checks = archiver.ReadCheckCache()
        backup_dir = self.live.now.runtime.backup_dir
        #: The one catalog of the backup directory's archives (its backup_dir never changes on
        #: reload), shared by the watcher, the ledger, the scheduler's catch-up, the jobs and
        #: the control socket: each archive's metadata is read once, not once per reader.
        self.archives = ArchivesPublisher(
            archiver.Catalog(backup_dir),
            live=self.live,
            ledger=self.ledger,
            metrics=self.metrics,
            health=self.health,
        )
        self.claim = BackupDirClaim(backup_dir, health=self.health)
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._wake = Waker()
        # Set by signal handlers, which must take no lock (see Waker); read by the main loop.
        self._stop_requested = False
        self._reload_requested = False
        self._signals = 0
        self.in_flight = InFlight()
        self.runs = ScheduledRuns(
            live=self.live,
            outcomes=self.outcomes,
            metrics=self.metrics,
            health=self.health,
            archives=self.archives,
            claim=self.claim,
            read_checks=self.read_checks,
            track=self.in_flight.track,
            stopping=self._stop,
            abort=self._abort,
        )
        self.scheduler: PolicyScheduler | None = None
        self.offsite: OffsiteUploader | None = None
        self._state: DaemonState | None = None
        self._control: ControlServer | None = None
        self.bound_metrics: tuple[str, int] | None = None

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
        old = self.live.now
        fixed = start_only_changes(old.settings, old.paths, settings, paths)
        if fixed:
            log.error(
                "config_reload_refused",
                error=f"{self._config_path}: {', '.join(fixed)} can only change with a restart "
                "(directory lock, control socket, metrics port and watcher are set up at start)",
            )
            return False
        with self.live.publishing:
            removed = set(old.settings.policies) - set(settings.policies)
            dropped = set(old.settings.databases) - set(settings.databases)
            self.live.now = Configured.of(settings, paths)
            if self._state is not None:
                self._state.runtime = self.live.now.runtime
            self.metrics.forget(policies=removed, databases=dropped)
            self.health.forget(policies=removed, databases=dropped)
            self.ledger.forget(removed)
            self.metrics.declare(policies=settings.policies, databases=settings.databases)
            self.metrics.objectives(settings.health.max_backup_age)
            self.archives.seed_from_disk()
        if self.scheduler is not None:
            self.scheduler.reschedule(settings.scheduled_policies(), timezone=settings.tzinfo)
        if self.offsite is not None:
            self.offsite.reloaded()
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
        rt, cfg = self.live.now.runtime, self.live.now.settings
        self.claim.take()  # a planted link is refused before the directory is touched
        stack.callback(self.claim.release)
        jobs.clean_leftovers(rt)
        for key, source in self.live.now.paths.sources.items():
            path = rt.backup_dir if key == "backup_dir" else rt.databases[key.split(".", 1)[1]].path
            log.info("path_resolved", key=key, path=str(path), source=source)
        self.archives.seed_from_disk()
        self.offsite = uploader = OffsiteUploader.start_for(
            self.live, self.metrics, self.archives.catalog, self.outcomes, self._environ,
            self.health, self.read_checks,
        )  # fmt: skip
        stack.callback(uploader.stop)
        self.notifier = Notifier.start_for(self.live, self.health, self.outcomes, self.registry)
        stack.callback(self.notifier.stop)
        if cfg.metrics.enabled:
            server = MetricsServer(registry=self.registry, health=self.health)
            self.bound_metrics = server.start(cfg.metrics.host, cfg.metrics.port)
            stack.callback(server.stop)
            log.info("metrics_listening", host=self.bound_metrics[0], port=self.bound_metrics[1])
        stack.callback((ui := UiServer.bind(self.live, self._environ)).stop)  # before any backup
        self.maintainer.start()
        stack.callback(self.maintainer.stop)
        watcher = HealthWatcher(
            interval=cfg.health.interval.total_seconds(), live=self.live, health=self.health,
            metrics=self.metrics, ledger=self.ledger, scan_archives=self.archives.scan,
            ensure_backup_dir=self.claim.ensure, scheduler=lambda: self.scheduler,
            offsite_check=uploader.lag.check, maintenance=self.maintainer.checked,
        )  # fmt: skip
        watcher.start()
        stack.callback(watcher.stop)
        self.scheduler = PolicyScheduler(
            cfg.scheduled_policies(),
            timezone=cfg.tzinfo,
            run_policy=self.runs.run_policy,
            last_success=self.archives.last_success,
            on_skipped=self.runs.run_skipped,
        )
        self.scheduler.start()
        stack.callback(self._stop_scheduler)
        self._state = state = DaemonState(
            runtime=rt,
            outcomes=self.outcomes,
            health=self.health,
            next_runs=self.scheduler.next_run_times,
            should_stop=self._abort.is_set,
            track=self.in_flight.track,
            archives_changed=self.archives.changed,
            read_checks=self.read_checks,
            catalog=self.archives.catalog,
            offsite=uploader,
        )
        handler = ControlHandler(state)  # one implementation behind the socket and the page
        ui.serve(self.live, handler, state, self._stop)  # refuses actions once stopping
        if cfg.control.enabled:
            control = ControlServer(
                cfg.control.socket,
                handler=handler,
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
        grace = self.live.now.settings.grace_period.total_seconds()
        log.info("daemon_stopping", grace_s=grace, in_flight=self.in_flight.count)
        aborter = threading.Timer(grace, self._abort_running)
        aborter.daemon = True
        aborter.start()
        try:
            self._stop_scheduler()
            if self._control is not None:
                self._control.stop()  # closes the listener, waits for in-flight requests
            if not self.in_flight.wait_idle(grace):
                self._abort_running()
                self.in_flight.wait_idle(30.0)
        finally:
            aborter.cancel()

    def _abort_running(self) -> None:
        if not self._abort.is_set() and self.in_flight.count:
            log.warning("grace_period_expired", action="aborting running operations")
        self._abort.set()
