"""A bad `ui` section stops the daemon before its scheduler starts (issue 17): an unset or short
token variable, or a `ui.listen` port in use, is one line naming the key, and no catch-up backup
ran first."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.daemon import DaemonRunner
from support.ui import UI


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another process listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


@pytest.mark.parametrize("case", ["unset", "short", "port_in_use"])
def test_a_bad_ui_stops_the_start_before_any_backup(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    busy_port: int,
    case: str,
) -> None:
    """The daemon exits non-zero with one line naming `ui.token_env` ("unset" when it is) or
    `ui.listen`; its due catch-up backup never started and no archive was written."""
    ui, env, expected = dict(UI), {"UI_TOKEN": "0123456789abcdef"}, "ui.token_env"
    if case == "unset":
        env, expected = {}, "environment UI_TOKEN: ui.token_env: is unset"
    elif case == "short":
        env = {"UI_TOKEN": "short"}
    else:
        ui["listen"] = f"127.0.0.1:{busy_port}"
        expected = f"ui.listen 127.0.0.1:{busy_port}: cannot listen there: Address already in use"
    cfg = daemon_config(
        databases={"user": wal_db}, policies={"hourly": {"every": "1h", "keep": 1}}, ui=ui
    )
    d = daemons.start(cfg, env=env, started_ok=False)
    code = d.wait_exit(timeout=30)
    errors = [line for line in d.log.raw if not line.startswith("{")]
    assert code != 0 and not d.log.find("daemon_started")
    assert len(errors) == 1 and expected in errors[0], d.log.raw
    assert not d.log.find("catch_up_due") and not d.log.find("backup_started")
    assert not list(d.backup_dir.glob("*.tar.gz"))


def test_a_metrics_port_in_use_is_one_line_naming_the_key(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    busy_port: int,
) -> None:
    """As the page's port: a `metrics.port` in use stops the start in one line naming the key
    (it said only `Address already in use`), before any backup."""
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={"hourly": {"every": "1h", "keep": 1}},
        metrics={"enabled": True, "host": "127.0.0.1", "port": busy_port},
    )
    d = daemons.start(cfg, started_ok=False)
    code = d.wait_exit(timeout=30)
    errors = [line for line in d.log.raw if not line.startswith("{")]
    assert code != 0 and not d.log.find("daemon_started")
    expected = f"metrics.port: cannot listen on 127.0.0.1:{busy_port}: Address already in use"
    assert len(errors) == 1 and expected in errors[0], d.log.raw
    assert not d.log.find("catch_up_due") and not list(d.backup_dir.glob("*.tar.gz"))
