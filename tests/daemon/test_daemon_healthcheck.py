"""`healthcheck` asks this configuration's daemon, never whatever answers on a port (outside
attack, issue 17): with the metrics endpoint disabled it asks the control socket's `status`
(another daemon's /healthz answering on `metrics.port` said healthy before); with it enabled
it requires the sidecar's own /healthz answer, not just any 200. Real daemons, a real foreign
HTTP server, the real CLI as a process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from support.cli import run_cli
from support.daemon import DaemonRunner, write_config
from support.foreign_http import foreign_http_server
from support.imports import heavy_imports, imported_modules, run_importtime
from support.waiting import wait_until


def test_metrics_disabled_asks_the_control_socket_not_the_port(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
    tmp_path: Path,
) -> None:
    """`metrics: {enabled: false, port: P}` while another sidecar's /healthz answers
    `{"status": "ok"}` on P: with no daemon of this configuration running, `healthcheck` exits
    1 with one line naming the control socket; with it running, it asks the socket's `status`
    (exit 0, and no heavy import: it stays the fast command); stopped, 1 again."""
    with foreign_http_server(b'{"status": "ok"}\n') as port:
        cfg = daemon_config(
            databases={"user": wal_db},
            policies={"manual": {"keep": 1}},
            metrics={"enabled": False, "port": port},
        )
        config = write_config(tmp_path / "sidecar.yaml", cfg)
        sock = cfg["control"]["socket"]
        before = run_cli("healthcheck", config=config)
        assert before.returncode == 1, before.stdout
        assert before.stdout == "" and sock in before.stderr
        assert len(before.stderr.strip().splitlines()) == 1

        d = daemons.start(config)
        done = run_importtime("--config", str(config), "healthcheck", env=d.env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout == f'{sock}: {{"status": "ok"}}\n'
        assert heavy_imports(imported_modules(done.stderr)) == set()

        assert d.stop() == 0
        after = run_cli("healthcheck", config=config)
        assert after.returncode == 1 and sock in after.stderr, after.stdout


def test_an_unhealthy_daemon_fails_over_the_socket(
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
) -> None:
    """With metrics disabled, a daemon whose database is gone answers `status` unhealthy:
    `healthcheck` exits 1 with one line giving its reasons."""
    d = daemons.start(
        daemon_config(
            databases={"user": wal_db},
            policies={"manual": {"keep": 1}},
            metrics={"enabled": False},
        )
    )
    assert run_cli("healthcheck", config=d.config_path).returncode == 0
    wal_db.rename(wal_db.with_suffix(".moved"))
    wait_until(lambda: not d.request("status")["healthy"], what="the daemon unhealthy", timeout=60)
    done = run_cli("healthcheck", config=d.config_path)
    assert done.returncode == 1, done.stdout
    assert "unhealthy" in done.stderr and "user" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_neither_endpoint_enabled_is_refused(
    daemon_config: Callable[..., dict[str, Any]], wal_db: Path, tmp_path: Path
) -> None:
    """Both the metrics endpoint and the control socket disabled: one line, exit 1."""
    cfg = daemon_config(
        databases={"user": wal_db},
        policies={},
        metrics={"enabled": False},
        control={"enabled": False},
    )
    done = run_cli("healthcheck", config=write_config(tmp_path / "sidecar.yaml", cfg))
    assert done.returncode == 1, done.stdout
    assert "disabled" in done.stderr and len(done.stderr.strip().splitlines()) == 1
