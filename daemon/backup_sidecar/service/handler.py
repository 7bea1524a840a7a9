"""The daemon's answers to control-socket requests: each op mapped onto the jobs."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from backup_sidecar import __version__, archiver, jobs
from backup_sidecar.control.answer import ping_result
from backup_sidecar.control.connection import PeerCred
from backup_sidecar.control.protocol import EncodedResult
from backup_sidecar.control.requests import (
    BackupRequest,
    ExportRequest,
    ListRequest,
    OffsiteStatusRequest,
    PingRequest,
    PruneRequest,
    Request,
    RestoreRequest,
    ScrubRequest,
    StatusRequest,
    VerifyRequest,
)
from backup_sidecar.control.results import RESULT_TYPES, ArchiveEntry, Result
from backup_sidecar.errors import UsageError
from backup_sidecar.jobs.offsite import fetch_archive
from backup_sidecar.jobs.offsite_pick import restore_latest
from backup_sidecar.jobs.pageexport import export_backup
from backup_sidecar.service.health import HealthState
from backup_sidecar.service.offsite import OffsiteUploader
from backup_sidecar.service.offsite_answer import offsite_status

#: How long a request with "wait": true waits for another operation on its databases.
WAIT_FOR_LOCK_S = 3600.0


@dataclass
class DaemonState:
    """What the handler reads from the running service; the service swaps `runtime` on reload."""

    runtime: jobs.Runtime
    #: Where the jobs publish how they ended (the daemon's metrics and health subscribe).
    outcomes: jobs.Outcomes
    health: HealthState
    next_runs: Callable[[], dict[str, datetime | None]]
    should_stop: Callable[[], bool]
    track: Callable[[str], Any]  # context manager marking an operation in flight
    #: Republish what the backup directory holds (archive counts, last successes) after an op
    #: that may have changed it.
    archives_changed: Callable[[], None] = lambda: None
    read_checks: archiver.ReadCheckCache = field(default_factory=archiver.ReadCheckCache)
    #: The daemon's one catalog of the backup directory (archiver.Catalog), shared by `list`,
    #: prune, scrub and restore; None: each request lists the directory itself.
    catalog: archiver.Catalog | None = None
    #: The offsite uploader (`offsite_status`, `restore` from offsite); None: not started.
    offsite: OffsiteUploader | None = None


def _encode_archives(archives: Iterable[archiver.ArchiveInfo]) -> bytes:
    """A ListResult (``{"archives": [...]}``) as compact JSON, one ArchiveEntry at a time:
    never a list of every archive's dict plus the whole document as text beside the bytes."""
    parts = [
        json.dumps(
            ArchiveEntry.model_validate(jobs.archive_json(a)).model_dump(),
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        for a in archives
    ]
    return b'{"archives":[' + b",".join(parts) + b"]}"


#: Ops that may write or delete archives (a failed restore may still leave its safety backup).
CHANGING_OPS = frozenset({"backup", "restore", "prune", "scrub"})


class ControlHandler:
    """Implements the control server's Handler protocol over the jobs."""

    def __init__(self, state: DaemonState) -> None:
        self._state = state
        self._list_lock = threading.Lock()
        #: (catalog generation, the `list` result encoded from it), shared by every request
        self._encoded_list: tuple[int, EncodedResult] | None = None

    def handle(
        self, request: Request, *, progress: Callable[[str, int, int], None], peer: PeerCred
    ) -> Result | EncodedResult:
        """The op's result model (control/results.py): a job's answer that does not fit it is a
        bug, answered ``failed`` like any other."""
        st = self._state
        rt = st.runtime
        try:
            answer = self._dispatch(request, rt, progress)
            if isinstance(answer, EncodedResult):
                return answer
            return RESULT_TYPES[request.op].model_validate(answer)
        finally:  # (the control server counts every request, this one included)
            if request.op in CHANGING_OPS:
                st.archives_changed()

    def _dispatch(
        self, request: Request, rt: jobs.Runtime, progress: Callable[[str, int, int], None]
    ) -> dict[str, Any] | EncodedResult:
        st = self._state
        effort = dataclasses.replace(rt.effort, progress=progress, should_stop=st.should_stop)
        match request:
            case PingRequest():
                return ping_result().model_dump()
            case StatusRequest():
                return self._status(rt)
            case ListRequest():
                return self._list(rt)
            case BackupRequest():
                rt.check_backup_policy(request.policy)
                with st.track("backup"):
                    info = jobs.run_backup(
                        rt,
                        policy=request.policy,
                        names=request.databases,
                        wait=WAIT_FOR_LOCK_S if request.wait else None,
                        effort=effort,
                        outcomes=st.outcomes,
                        checks=st.read_checks,
                    )
                    # Like a scheduled run: a success clears the policy's "last backup failed"
                    # reason (the health subscriber), and the policy is pruned (never the
                    # archive just written). `manual` is pruned only when asked (`prune`, the
                    # seed's `--cleanup`).
                    if request.policy != jobs.MANUAL_POLICY:
                        jobs.prune_after_backup(
                            rt,
                            policy=request.policy,
                            just_written=info.name,
                            outcomes=st.outcomes,
                            checks=st.read_checks,
                            catalog=st.catalog,
                        )
                return {
                    "archive": info.name,
                    "size_bytes": info.size_bytes,
                    "databases": list(info.databases),
                }
            case VerifyRequest() | ExportRequest():
                with st.track(request.op):
                    return _verify_or_export(rt, request, effort)
            case RestoreRequest():
                with st.track("restore"):
                    return self._restore(rt, request, effort)
            case PruneRequest():
                with st.track("prune"):
                    pruned = jobs.run_prune(
                        rt,
                        policies=[request.policy] if request.policy else None,
                        keep=request.keep,
                        dry_run=request.dry_run,
                        outcomes=st.outcomes,
                        checks=st.read_checks,
                        catalog=st.catalog,
                    )
                return jobs.prune_json(pruned, dry_run=request.dry_run)
            case ScrubRequest():
                with st.track("scrub"):
                    report = jobs.run_scrub(
                        rt,
                        checks=st.read_checks,
                        effort=effort,
                        outcomes=st.outcomes,
                        catalog=st.catalog,
                    )
                return report.as_json()
            case OffsiteStatusRequest():
                if st.offsite is None:
                    raise UsageError("this daemon runs no offsite uploader")
                return offsite_status(st.offsite, rt, st.health)
        raise AssertionError(f"unhandled op {request.op}")  # pragma: no cover

    def _restore(
        self, rt: jobs.Runtime, request: RestoreRequest, effort: jobs.Effort
    ) -> dict[str, Any]:
        if request.source == "offsite" and request.latest:
            return self._restore_latest(rt, request, effort)
        ref = request.archive
        if request.source == "offsite":
            ref = self._fetch(rt, request.archive, request.databases, effort)
        assert ref is not None  # (the request model demands one or "latest")
        result = jobs.run_restore(
            rt,
            ref,
            names=request.databases,
            dry_run=request.dry_run,
            wait=WAIT_FOR_LOCK_S if request.wait else None,
            effort=effort,
            outcomes=self._state.outcomes,
            catalog=self._state.catalog,
        )
        return jobs.restore_json(result)

    def _fetch(
        self, rt: jobs.Runtime, ref: str | None, names: list[str] | None, effort: jobs.Effort
    ) -> str:
        """Download ``ref`` (None: the newest confirmed copy) from the offsite store into the
        backup directory (checked, decrypted); the local archive name to restore."""
        rt.require_offsite()
        if names:
            rt.select(names)  # an unknown database is refused before anything is downloaded
        return fetch_archive(rt, ref, environ=self._offsite_environ(), effort=effort).archive

    def _restore_latest(
        self, rt: jobs.Runtime, request: RestoreRequest, effort: jobs.Effort
    ) -> dict[str, Any]:
        return restore_latest(
            rt,
            request.databases,
            environ=self._offsite_environ(),
            dry_run=request.dry_run,
            wait=WAIT_FOR_LOCK_S if request.wait else None,
            effort=effort,
            outcomes=self._state.outcomes,
            catalog=self._state.catalog,
        )

    def _offsite_environ(self) -> Mapping[str, str]:
        if self._state.offsite is None:
            raise UsageError("this daemon runs no offsite uploader")
        return self._state.offsite.environ

    def _list(self, rt: jobs.Runtime) -> dict[str, Any] | EncodedResult:
        """Every archive, from the catalog rescanned now (only new or changed archives are
        read), encoded once per catalog generation and shared by concurrent requests: memory
        does not grow with the number of clients listing at once."""
        catalog = self._state.catalog
        if catalog is None:
            return {
                "archives": [jobs.archive_json(a) for a in archiver.list_archives(rt.backup_dir)]
            }
        snapshot = catalog.refresh()  # outside the lock: concurrent requests share one scan
        if rt.incremental:  # incremental backups too: not in the catalog, so never cached
            return {
                "archives": [
                    jobs.archive_json(a) for a in jobs.with_incremental(rt, snapshot.archives)
                ]
            }
        with self._list_lock:
            cached = self._encoded_list
            if cached is None or cached[0] < snapshot.generation:
                cached = (snapshot.generation, EncodedResult(_encode_archives(snapshot.archives)))
                self._encoded_list = cached
            return cached[1]

    def _status(self, rt: jobs.Runtime) -> dict[str, Any]:
        health = self._state.health.current()
        return {
            "version": __version__,
            "healthy": health.ok,
            "reasons": health.reasons(),
            "unknown": health.unknown(),
            "backup_dir": str(rt.backup_dir),
            "databases": {name: str(spec.path) for name, spec in rt.databases.items()},
            "next_runs": {
                p: (t.isoformat() if t else None) for p, t in self._state.next_runs().items()
            },
            "checks": {
                db.name: {
                    "healthy": db.healthy if db.known else None,
                    "size_bytes": db.size_bytes,
                    "wal_size_bytes": db.wal_size_bytes,
                    "page_count": db.page_count,
                    "freelist_count": db.freelist_count,
                    "error": db.error,
                }
                for db in health.databases
                if db.name in rt.databases
            },
        }


def _verify_or_export(
    rt: jobs.Runtime, request: VerifyRequest | ExportRequest, effort: jobs.Effort
) -> dict[str, Any]:
    """`verify` of an archive or incremental backup; `export` of an incremental backup to the
    absolute path ``out`` on the daemon's side (never replaced)."""
    if isinstance(request, VerifyRequest):
        return jobs.run_verify(rt, request.archive, effort=effort)
    out = export_backup(rt, request.archive, out=Path(request.out), cwd=Path("/"))
    return {"archive": request.archive, "path": str(out)}
