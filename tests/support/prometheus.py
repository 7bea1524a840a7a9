"""A real Prometheus (Debian's /usr/bin/prometheus) scraping a real daemon, both on loopback.

Prometheus runs with a generated configuration that scrapes the daemon every second and loads
config/alerts.yml with only the `for:` durations shortened, so the expressions under test are
the shipped ones.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.daemon import Daemon
from support.metrics import free_port, http_get
from support.paths import ROOT
from support.processes import terminate
from support.waiting import wait_until

ALERTS = ROOT / "config" / "alerts.yml"
DASHBOARD = ROOT / "config" / "grafana" / "backup-sidecar.json"
JOB = "backup-sidecar"
#: How long Prometheus waits before a pending alert fires, in the test copy of the rules.
TEST_FOR = "2s"
#: How long Prometheus may take to be ready, and anything it is waited for.
DEADLINE_S = 60.0


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


@dataclass(frozen=True)
class SidecarDaemon:
    """The daemon Prometheus scrapes, and the two databases it backs up."""

    daemon: Daemon
    arrow_db: Path
    user_db: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.daemon.metrics_port}"

    @property
    def backup_dir(self) -> Path:
        return self.daemon.backup_dir


@dataclass
class Prometheus:
    """A running Prometheus and its HTTP API."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    @classmethod
    def start(cls, root: Path, *, target: str) -> Prometheus:
        """Prometheus on a free loopback port with its files in ``root``, scraping ``target``
        every second, once it is ready."""
        root.mkdir()
        (root / "alerts.yml").write_text(rules_for_test(ALERTS))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                       "scrape_timeout": "1s"},
            "rule_files": [str(root / "alerts.yml")],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
        }  # fmt: skip
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = root / "prometheus.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [require_binary("prometheus"), f"--config.file={root / 'prometheus.yml'}",
                 f"--storage.tsdb.path={root / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                 "--log.level=warn"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root,
            )  # fmt: skip
        prom = cls(proc, f"http://127.0.0.1:{port}", log)
        try:
            wait_until(
                lambda: proc.poll() is not None or http_get(f"{prom.url}/-/ready")[0] == 200,
                timeout=30,
                what="Prometheus to be ready",
            )
            assert proc.poll() is None, f"prometheus exited {proc.returncode}: {log.read_text()}"
        except BaseException:
            prom.stop()
            raise
        return prom

    def stop(self, *, timeout: float = 30.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time; the exit code."""
        terminate(self.proc, timeout=timeout)
        return self.proc.wait()

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
