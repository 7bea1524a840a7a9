"""Notifications and heartbeat pings of a real daemon, received by a real local HTTP server
(apprise's ``json://`` for messages, a plain GET for the heartbeat)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backup_sidecar.errors import ControlError
from support.daemon import Daemon, DaemonRunner
from support.databases import make_db
from support.metrics import sample
from support.receiver import Receiver, running_receiver
from support.waiting import wait_until

NOTIFIED = "backup_sidecar_notifications_total"
#: Path parts standing for the tokens real notification URLs carry: never in the daemon's log.
SECRET = "s3cr3t-token-9f8e7d"  # noqa: S105  (a stand-in)
HB_SECRET = "hb-uuid-0a1b2c3d"  # noqa: S105  (a stand-in)


def _titles(receiver: Receiver, text: str) -> list[str]:
    return [
        str(r.body.get("title"))
        for r in receiver.received("/notify/")
        if text in str(r.body.get("title"))
    ]


def _secret_env(receiver: Receiver) -> dict[str, str]:
    return {
        "SIDECAR_NOTIFY__URLS": json.dumps([receiver.url("json", f"/notify/{SECRET}")]),
        "SIDECAR_NOTIFY__HEARTBEAT_URL": receiver.url("http", f"/hb/{HB_SECRET}"),
    }


def _assert_no_secret_logged(d: Daemon) -> None:
    logged = "\n".join(d.log.raw)
    assert SECRET not in logged
    assert HB_SECRET not in logged


def test_a_failing_policy_sends_one_message_then_one_recovered_and_heartbeats(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    """A policy whose backup fails every second (its database does not exist yet) sends one
    "backups fail" message, not one per run; the heartbeat gets ``/fail`` after each failed
    backup; once the database appears the next backup succeeds, one "backups succeed again"
    message arrives and the heartbeat URL itself is pinged. The secrets in both URLs (set in
    the environment) never appear in the daemon's log."""
    db = tmp_path / "later.db"
    cfg = daemon_config(databases={"user": db}, policies={"fast": {"every": "1s", "keep": 2}})
    with running_receiver() as receiver:
        d = daemons.start(cfg, env=_secret_env(receiver))
        wait_until(lambda: _titles(receiver, "'fast': backups fail"), what="the failing message")
        seen = d.log.mark()
        d.log.wait("backup_failed", policy="fast", since=seen, count=3)
        fails = f"/hb/{HB_SECRET}/fail"
        wait_until(lambda: len(receiver.received(fails)) >= 3, what="three /fail pings")
        assert all(r.method == "GET" for r in receiver.received("/hb/"))
        (failing,) = [r for r in receiver.received("/notify/") if "fail" in r.body["title"]]
        assert _titles(receiver, "'fast': backups fail") == [
            "backup-sidecar: policy 'fast': backups fail"
        ]
        assert failing.body["type"] == "failure"
        assert "the last backup failed" in failing.body["message"]

        make_db(db, wal=True, rows=20)
        d.log.wait("backup_completed", policy="fast")
        wait_until(lambda: _titles(receiver, "'fast': backups succeed again"), what="the recovery")
        wait_until(
            lambda: [r for r in receiver.received("/hb/") if r.path == f"/hb/{HB_SECRET}"],
            what="a heartbeat ping without /fail",
        )
        (recovered,) = [
            r for r in receiver.received("/notify/") if "succeed again" in r.body["title"]
        ]
        assert recovered.body["type"] == "success"
        assert len(_titles(receiver, "'fast': backups fail")) == 1
        wait_until(
            lambda: (sample(d.scrape(), NOTIFIED, event="backup_failed", result="sent") or 0) >= 2,
            what="both messages counted",
        )
        _assert_no_secret_logged(d)


def test_removing_a_failing_policy_drops_its_state_without_a_recovered_message(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    """A reload that removes a failing policy forgets its condition: no "backups succeed
    again" message for a policy nobody watches any more (nor a second "fail" one later)."""
    db = tmp_path / "missing.db"
    cfg = daemon_config(databases={"user": db}, policies={"fast": {"every": "1s", "keep": 2}})
    with running_receiver() as receiver:
        d = daemons.start(cfg, env=_secret_env(receiver))
        wait_until(lambda: _titles(receiver, "'fast': backups fail"), what="the failing message")
        d.rewrite_config({**cfg, "policies": {}})
        seen = d.log.mark()
        d.signal(1)  # SIGHUP
        d.log.wait("config_reloaded", since=seen)
        d.log.wait("notification_state_dropped", since=seen, notify_event="backup_failed")
        assert _titles(receiver, "'fast'") == ["backup-sidecar: policy 'fast': backups fail"]


def test_a_dead_receiver_never_delays_a_backup(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> None:
    """Heartbeat and notification URLs on a port that accepts connections but never answers:
    three backups asked for on the socket still finish well within one heartbeat timeout
    (10 s), the pings time out on the notifier's own thread, and each is counted failed."""
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(16)  # connections complete in the backlog; nothing is ever read
        port = blackhole.getsockname()[1]
        env = {
            "SIDECAR_NOTIFY__URLS": json.dumps([f"json://127.0.0.1:{port}/n/{SECRET}"]),
            "SIDECAR_NOTIFY__HEARTBEAT_URL": f"http://127.0.0.1:{port}/hb/{HB_SECRET}",
        }
        cfg = daemon_config(databases={"user": wal_db}, policies={"manual": {"keep": 5}})
        d = daemons.start(cfg, env=env)
        started = time.monotonic()
        for _ in range(3):
            d.request("backup", policy="manual", wait=True)
        elapsed = time.monotonic() - started
        assert elapsed < 8.0, elapsed
        d.log.wait("heartbeat_failed", policy="manual", timeout=60)
        wait_until(
            lambda: (sample(d.scrape(), NOTIFIED, event="heartbeat", result="failed") or 0) >= 1,
            what="the failed ping counted",
        )
        _assert_no_secret_logged(d)


def test_a_failing_backup_asked_for_on_the_socket_notifies_once_like_a_scheduled_one(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    """Backups asked for on the control socket (as the web page asks) whose database does not
    exist send one "backups fail" message for the policy, not one per request (before: none,
    only scheduled runs were watched); once the database exists the next one asked for sends
    one "backups succeed again"."""
    db = tmp_path / "later.db"
    cfg = daemon_config(databases={"user": db}, policies={"daily": {"every": "1d", "keep": 2}})
    with running_receiver() as receiver:
        d = daemons.start(cfg, env=_secret_env(receiver))
        for _ in range(3):
            with pytest.raises(ControlError):
                d.request("backup", policy="manual", wait=True)
        wait_until(lambda: _titles(receiver, "'manual': backups fail"), what="the message")
        (failing,) = [r for r in receiver.received("/notify/") if "'manual'" in r.body["title"]]
        assert failing.body["title"] == "backup-sidecar: policy 'manual': backups fail"
        assert failing.body["type"] == "failure"
        assert "the last backup failed" in failing.body["message"]

        make_db(db, wal=True, rows=20)
        d.request("backup", policy="manual", wait=True)
        wait_until(lambda: _titles(receiver, "'manual': backups succeed again"), what="recovery")
        assert _titles(receiver, "'manual'") == [
            "backup-sidecar: policy 'manual': backups fail",
            "backup-sidecar: policy 'manual': backups succeed again",
        ]
        _assert_no_secret_logged(d)


def test_a_reload_with_an_unknown_apprise_scheme_is_refused_and_the_old_urls_keep_working(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    """A new configuration whose `notify.urls[1]` has a scheme apprise does not know (`slak`)
    is refused at the reload, naming notify.urls.1 and not the URL (before: accepted, and
    every message to it failed at send time); the running URLs still deliver."""
    db = tmp_path / "missing.db"
    cfg = daemon_config(databases={"user": db}, policies={"daily": {"every": "1d", "keep": 2}})
    with running_receiver() as receiver:
        good = receiver.url("json", f"/notify/{SECRET}")
        d = daemons.start({**cfg, "notify": {"urls": [good]}})
        typo = f"slak://{SECRET}@example/channel"
        bad = {**cfg, "notify": {"urls": [good, typo]}}
        d.rewrite_config(bad)
        seen = d.log.mark()
        d.signal(1)  # SIGHUP
        refused = d.log.wait("config_reload_refused", since=seen)
        assert "notify.urls.1" in refused["error"], refused
        assert "'slak'" in refused["error"], refused
        with pytest.raises(ControlError):
            d.request("backup", policy="manual", wait=True)
        wait_until(lambda: _titles(receiver, "'manual': backups fail"), what="the message")
        _assert_no_secret_logged(d)
