"""Fixtures of the Prometheus suite: `sidecar_daemon`, the real daemon on fresh databases with a
policy every second, and `prometheus`, a real Prometheus scraping it with the shipped alert
rules (tests/support/prometheus.py). Both are stopped at teardown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.daemon import DaemonRunner, daemon_config
from support.databases import make_db
from support.prometheus import Prometheus, SidecarDaemon


@pytest.fixture
def sidecar_daemon(
    tmp_path: Path, sock_dir: Path, daemons: DaemonRunner
) -> Iterator[SidecarDaemon]:
    """The daemon on two fresh databases: `frequent` backs up every second, `drill` every 2s,
    each archive copied to a file:// offsite store;
    SIGTERM at teardown must end it with exit code 0."""
    root = tmp_path / "sidecar"
    for sub in ("arrow_data", "user_data", "backups"):
        (root / sub).mkdir(parents=True)
    arrow = make_db(root / "arrow_data" / "arrow_database.db", wal=False)
    user = make_db(root / "user_data" / "user_data.db", wal=True)
    config = daemon_config(
        backup_dir=root / "backups",
        databases={"arrow": arrow, "user": user},
        socket_path=sock_dir / "control.sock",
        policies={
            "frequent": {"every": "1s", "keep": 3},
            "drill": {"every": "2s", "keep": 0},
            "pre_restore": {"keep": 2},
        },
        health={"max_backup_age": {"frequent": "1h"}},
        # a file:// store (the same code path as s3://): the offsite panels have data
        offsite={"url": f"file://{root / 'offsite'}", "max_age": "1h"},
        lock_timeout="2s",
        grace_period="5s",
    )
    daemon = daemons.start(config)
    yield SidecarDaemon(daemon, arrow, user)
    tail = "\n".join(daemon.log.raw[-20:])
    assert daemon.stop() == 0, f"daemon exited {daemon.exit_code}:\n{tail}"


@pytest.fixture
def prometheus(tmp_path: Path, sidecar_daemon: SidecarDaemon) -> Iterator[Prometheus]:
    """Prometheus on a free loopback port, scraping `sidecar_daemon` every second."""
    prom = Prometheus.start(tmp_path / "prometheus", target=sidecar_daemon.target)
    try:
        yield prom
    finally:
        prom.stop()
