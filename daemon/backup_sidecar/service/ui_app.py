"""What the web page reads and does: every value and every action is a request to the
control socket's handler (service/handler.py), the same models (control/requests.py) the socket
decodes; the page and the socket cannot disagree. Operations in progress report their stages
to a ProgressBoard the restore page polls (`GET /progress`)."""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from backup_sidecar.control.answer import Handler
from backup_sidecar.control.connection import PeerCred
from backup_sidecar.control.protocol import EncodedResult
from backup_sidecar.control.requests import parse_request
from backup_sidecar.control.results import (
    ListResult,
    OffsiteStatusResult,
    RestoreResult,
    Result,
    StatusResult,
    parse_result,
)
from backup_sidecar.errors import SidecarError
from backup_sidecar.service import ui_html as html
from backup_sidecar.service import ui_pages as pages
from backup_sidecar.service.live import LiveConfig
from backup_sidecar.service.ui_auth import Gate
from backup_sidecar.service.ui_events import RecentEvents
from backup_sidecar.service.ui_pages_offsite import offsite_section

log = structlog.get_logger(__name__)


#: The page's operations whose progress it shows.
SHOWN_OPS = frozenset({"backup", "verify", "restore"})


class ProgressBoard:
    """The stage each running page operation last reported: (op, stage, done, total)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._running: dict[int, tuple[str, str, int, int]] = {}

    def start(self, op: str) -> int:
        key = next(self._ids)
        if op not in SHOWN_OPS:  # a read (status, list...) is over before anyone could look
            return key
        with self._lock:
            self._running[key] = (op, "starting", 0, 0)
        return key

    def report(self, key: int, stage: str, done: int, total: int) -> None:
        with self._lock:
            if key in self._running:
                self._running[key] = (self._running[key][0], stage, done, total)

    def finish(self, key: int) -> None:
        with self._lock:
            self._running.pop(key, None)

    def now(self) -> list[tuple[str, str, int, int]]:
        with self._lock:
            return list(self._running.values())


#: Policies a person may start from the page (pre_restore is the restores' own, drill a drill).
_NOT_BY_HAND = frozenset({"pre_restore", "drill"})


class UiApp:
    """What the pages read and do, through the control socket's handler."""

    def __init__(
        self, *, handler: Handler, live: LiveConfig, gate: Gate, events: RecentEvents
    ) -> None:
        self.handler = handler
        self.live = live
        self.gate = gate
        self.events = events
        self.progress = ProgressBoard()
        self._peer = PeerCred(pid=os.getpid(), uid=os.getuid(), gid=os.getgid())
        #: True once the daemon shuts down: actions are refused (the page still reads).
        self.stopping: Callable[[], bool] = lambda: False

    def ask(self, data: Mapping[str, Any]) -> Result:
        """One request through the handler; its errors propagate (SidecarError and bugs)."""
        request = parse_request(data)
        key = self.progress.start(request.op)
        try:
            answer = self.handler.handle(
                request,
                progress=lambda stage, done, total: self.progress.report(key, stage, done, total),
                peer=self._peer,
            )
        finally:
            self.progress.finish(key)
        if isinstance(answer, EncodedResult):
            return parse_result(request.op, json.loads(answer.body))
        return answer

    def home(self, outcome: str) -> bytes:
        now = datetime.now(UTC)
        settings = self.live.now.settings
        status = self.ask({"op": "status"})
        listing = self.ask({"op": "list"})
        assert isinstance(status, StatusResult) and isinstance(listing, ListResult)
        offsite: OffsiteStatusResult | None = None
        if settings.offsite is not None:
            try:
                answer = self.ask({"op": "offsite_status"})
                assert isinstance(answer, OffsiteStatusResult)
                offsite = answer
            except SidecarError as exc:  # the uploader did not start: the rest still shows
                log.warning("ui_offsite_status_failed", error=str(exc))
        newest: dict[str, datetime] = {}
        for a in listing.archives:
            if a.verified:
                created = datetime.fromisoformat(a.created_at)
                newest[a.policy] = max(created, newest.get(a.policy, created))
        csrf = self.gate.csrf_token()
        policies = ["manual", *(p for p in settings.policies if p not in _NOT_BY_HAND)]
        body = (
            outcome
            + pages.status_section(
                status,
                rpo=settings.health.max_backup_age,
                newest_good=newest,
                now=now,
            )
            + offsite_section(offsite, csrf=csrf)
            + pages.backup_form(policies, csrf=csrf)
            + pages.progress_box(self.progress.now(), every="1s")  # a backup's or verify's
            + pages.archives_section(
                listing.archives,
                csrf=csrf,
                now=now,
                copies=offsite.copies if offsite is not None and offsite.configured else None,
            )
            + pages.events_section(self.events.newest_first(), now=now)
        )
        return pages.page("status", body)

    def _databases_of(self, archive: str | None) -> list[str]:
        """The databases ``archive`` holds, as the socket's `list` says (a dry run restores
        none, so its answer names none)."""
        listing = self.ask({"op": "list"})
        assert isinstance(listing, ListResult)
        return next((a.databases for a in listing.archives if a.name == archive), [])

    def act(self, path: str, form: Mapping[str, str]) -> bytes:
        """Run one action; the home page with its outcome (or the restore plan page)."""
        archive = form.get("archive", "")
        if path == "/backup":
            done = self.ask({"op": "backup", "policy": form.get("policy", "manual")})
            return self.home(pages.outcome([f"Backed up: <code>{html.e(done.archive)}</code>"]))  # type: ignore[union-attr]
        if path == "/verify":
            self.ask({"op": "verify", "archive": archive})
            return self.home(pages.outcome([f"Verified: <code>{html.e(archive)}</code> is sound"]))
        source, target = _restore_fields(form)
        parse_request({"op": "restore", **target, **source})  # the socket's refusals, first
        latest = target.get("latest") is True
        if path == "/restore/plan":  # (from offsite: the dry run downloads and checks the copy)
            plan = self.ask({"op": "restore", **target, "dry_run": True, **source})
            assert isinstance(plan, RestoreResult)
            copy = archive if source.get("from") == "offsite" and not latest else None
            csrf = self.gate.csrf_token()
            dbs = sorted(plan.databases or {}) if latest else self._databases_of(plan.archive)
            return pages.restore_plan_page(plan, csrf=csrf, copy=copy, latest=latest, dbs=dbs)
        if path == "/restore":
            name = "latest" if latest else archive
            if form.get("confirm_name", "").strip() != name:
                what = name if latest else f"the archive name {name}"
                message = f"type {what} exactly to confirm; nothing was changed"
                return self.home(pages.outcome(error=message))
            if form.get("pick") == "1":  # the plan offered a choice of databases
                chosen = [db for db in form.get("db", "").split(",") if db]
                if not chosen:
                    message = "choose at least one database to restore; nothing was changed"
                    return self.home(pages.outcome(error=message))
                target["databases"] = chosen
            result = self.ask({"op": "restore", **target, "confirm": True, **source})
            assert isinstance(result, RestoreResult)
            return self.home(pages.outcome(pages.restore_done_lines(result)))
        raise LookupError(path)


def _restore_fields(form: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The restore's ``from`` and its archive / ``latest``, as the form sent them: the socket's
    validation (parse_request) refuses what it would refuse on the socket, nothing is dropped."""
    source: dict[str, Any] = {"from": form["from"]} if "from" in form else {}
    target: dict[str, Any] = {}
    if "latest" in form:
        target["latest"] = {"1": True, "0": False}.get(form["latest"], form["latest"])
    if "archive" in form or not target.get("latest"):
        target["archive"] = form.get("archive", "")
    return source, target
