"""A real Prometheus (Debian's /usr/bin/prometheus) scraping a real daemon, both on loopback.

`sidecar_daemon` starts `python -m backup_sidecar --config FILE run` on fresh databases with a
policy every second; `prometheus` starts Prometheus with a generated configuration that scrapes
it every second and loads config/alerts.yml with only the `for:` durations shortened, so the
expressions under test are the shipped ones. Both are stopped at teardown. Nothing sleeps to
synchronise: every wait polls a condition up to a deadline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT, make_db

ALERTS = ROOT / "config" / "alerts.yml"
DASHBOARD = ROOT / "config" / "grafana" / "backup-sidecar.json"
JOB = "backup-sidecar"
#: How long Prometheus waits before a pending alert fires, in the test copy of the rules.
TEST_FOR = "2s"
DEADLINE_S = 60.0


def wait_until(condition: Callable[[], Any], *, timeout: float = DEADLINE_S, what: str) -> Any:
    """Poll `condition` until it returns something truthy (returned) or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)  # the poll interval; the deadline bounds the wait


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, *, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET `url`; (status, body), with (0, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback)
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def require_binary(name: str) -> str:
    """The path of a Debian tool the tests drive; missing means the bootstrap was skipped."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: run ./scripts/bootstrap.sh --with-prometheus (make test)")
    return path


def rules_for_test(source: Path, *, hold: str = TEST_FOR) -> str:
    """The shipped rules with every `for:` shortened to `hold`, and nothing else changed."""
    text, count = re.subn(r"(?m)^(\s+for:\s*)\S+\s*$", rf"\g<1>{hold}", source.read_text())
    assert count > 0, f"no `for:` in {source}"
    return text


def stop_process(proc: subprocess.Popen[Any], *, timeout: float = 30.0) -> int:
    """SIGTERM, then SIGKILL if it does not exit in time; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@dataclass
class SidecarDaemon:
    """A running daemon: its process, metrics port, databases and log file."""

    proc: subprocess.Popen[bytes]
    port: int
    arrow_db: Path
    user_db: Path
    backup_dir: Path
    log: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])


@pytest.fixture
def sidecar_daemon(tmp_path: Path) -> Iterator[SidecarDaemon]:
    """The daemon on two fresh databases: `frequent` backs up every second, `drill` every 2s."""
    root = tmp_path / "sidecar"
    for sub in ("arrow_data", "user_data", "backups", "run"):
        (root / sub).mkdir(parents=True)
    arrow = make_db(root / "arrow_data" / "arrow_database.db", wal=False)
    user = make_db(root / "user_data" / "user_data.db", wal=True)
    port = free_port()
    config = {
        "backup_dir": str(root / "backups"),
        "databases": {"arrow": {"path": str(arrow)}, "user": {"path": str(user)}},
        "policies": {
            "frequent": {"every": "1s", "keep": 3},
            "drill": {"every": "2s", "keep": 0},
            "pre_restore": {"keep": 2},
        },
        "health": {"interval": "1s", "max_backup_age": {"frequent": "1h"}},
        "metrics": {"host": "127.0.0.1", "port": port},
        "control": {"socket": str(root / "run" / "control.sock")},
        "lock_timeout": "2s",
        "grace_period": "5s",
    }
    config_path = root / "sidecar.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SIDECAR_") and not k.endswith("_DATABASE_PATH") and k != "BACKUP_DIR"
    }
    log = root / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "backup_sidecar", "--config", str(config_path),
             "--log-format", "json", "run"],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    daemon = SidecarDaemon(proc, port, arrow, user, root / "backups", log)
    try:
        wait_until(
            lambda: proc.poll() is not None or http_get(f"http://{daemon.target}/healthz")[0],
            timeout=30,
            what="the daemon's metrics endpoint",
        )
        assert proc.poll() is None, f"daemon exited {proc.returncode}:\n{daemon.log_tail()}"
        yield daemon
    finally:
        code = stop_process(proc)
        assert code == 0, f"daemon exited {code}:\n{daemon.log_tail()}"


@dataclass
class Prometheus:
    """A running Prometheus and its HTTP API."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the `data` of a successful answer, else AssertionError."""
        query = urllib.parse.urlencode(params)
        status, body = http_get(f"{self.url}/api/v1/{path}?{query}", timeout=10)
        doc = json.loads(body) if body else {}
        assert status == 200 and doc.get("status") == "success", (
            f"{path} {params}: HTTP {status}: {doc.get('errorType')}: {doc.get('error')}"
        )
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result (a vector's samples; [] when empty)."""
        data = self.api("query", query=expr)
        result = data["result"]
        return result if data["resultType"] == "vector" else [{"value": result}]

    def alerts(self, name: str, state: str = "firing") -> list[dict[str, Any]]:
        return [
            a
            for a in self.api("alerts")["alerts"]
            if a["labels"]["alertname"] == name and a["state"] == state
        ]


@pytest.fixture
def prometheus(tmp_path: Path, sidecar_daemon: SidecarDaemon) -> Iterator[Prometheus]:
    """Prometheus on a free loopback port, scraping `sidecar_daemon` every second."""
    binary = require_binary("prometheus")
    root = tmp_path / "prometheus"
    root.mkdir()
    (root / "alerts.yml").write_text(rules_for_test(ALERTS))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(root / "alerts.yml")],
        "scrape_configs": [
            {"job_name": JOB, "static_configs": [{"targets": [sidecar_daemon.target]}]}
        ],
    }
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = root / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, f"--config.file={root / 'prometheus.yml'}",
             f"--storage.tsdb.path={root / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
             "--log.level=warn"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root,
        )  # fmt: skip
    prom = Prometheus(proc, f"http://127.0.0.1:{port}", log)
    try:
        wait_until(
            lambda: proc.poll() is not None or http_get(f"{prom.url}/-/ready")[0] == 200,
            timeout=30,
            what="Prometheus to be ready",
        )
        assert proc.poll() is None, f"prometheus exited {proc.returncode}: {log.read_text()}"
        yield prom
    finally:
        stop_process(proc)
