"""The metrics port over real HTTP: /metrics (checked by promtool), /healthz and its lifecycle."""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from backup_sidecar.archiver.model import DatabaseSpec
from backup_sidecar.service.dbcheck import check_database
from backup_sidecar.service.health import HealthState
from backup_sidecar.service.httpserver import MetricsServer
from backup_sidecar.service.metrics import Metrics
from backup_sidecar.service.overdue import overdue_policies

T0 = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


@dataclass(frozen=True)
class Sidecar:
    """A started server with the registry, metrics and health state behind it."""

    url: str
    host: str
    port: int
    server: MetricsServer
    metrics: Metrics
    health: HealthState

    def get(self, path: str, *, method: str = "GET") -> Response:
        # The URL is always http://127.0.0.1:<port>/..., built by the fixture.
        request = urllib.request.Request(self.url + path, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310
                return Response(reply.status, reply.headers["Content-Type"], reply.read())
        except urllib.error.HTTPError as error:
            with error:
                return Response(error.code, error.headers["Content-Type"], error.read())


@pytest.fixture
def sidecar() -> Iterator[Sidecar]:
    """The HTTP server on a free loopback port, stopped (and joined) after the test."""
    registry = CollectorRegistry()
    metrics = Metrics(registry, version="0.1.0", policies=["daily", "weekly"])
    health = HealthState()
    server = MetricsServer(registry=registry, health=health)
    host, port = server.start("127.0.0.1", 0)
    yield Sidecar(f"http://{host}:{port}", host, port, server, metrics, health)
    server.stop()


@pytest.fixture
def arrow_db(tmp_path: Path) -> Path:
    """A real WAL database with a few hundred rows."""
    path = tmp_path / "arrow_database.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("CREATE TABLE arrows (id INTEGER PRIMARY KEY, name TEXT)")
    conn.executemany("INSERT INTO arrows (name) VALUES (?)", ((f"a{i}" * 20,) for i in range(3000)))
    conn.commit()
    conn.close()
    return path


def observe_database(sidecar: Sidecar, db: Path) -> None:
    """What the daemon's health job does: check, then publish to the state and the metrics."""
    health = check_database(DatabaseSpec("arrow", db), integrity="quick", timeout_s=2)
    sidecar.health.set_databases((health,))
    sidecar.metrics.database_observed(
        "arrow",
        healthy=health.healthy,
        size_bytes=health.size_bytes,
        wal_size_bytes=health.wal_size_bytes,
        page_count=health.page_count,
        freelist_count=health.freelist_count,
    )


def test_metrics_endpoint_serves_the_registry(sidecar: Sidecar) -> None:
    """GET /metrics returns the injected registry in the Prometheus text format."""
    sidecar.metrics.backup_finished("daily", ok=True, duration_s=0.4, finished_at=T0)
    reply = sidecar.get("/metrics")
    assert reply.status == 200
    assert reply.content_type == CONTENT_TYPE_PLAIN_0_0_4  # what Prometheus parses by default
    text = reply.body.decode()
    assert 'backup_sidecar_build_info{python_version="' in text
    assert 'backup_sidecar_backup_runs_total{policy="daily",result="ok"} 1.0' in text
    assert sidecar.get("/metrics?debug=1").status == 200


def test_promtool_accepts_a_live_scrape(sidecar: Sidecar, arrow_db: Path) -> None:
    """`promtool check metrics` finds no problem in a scrape with every metric populated."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (./scripts/bootstrap.sh --with-prometheus adds it)")
    m = sidecar.metrics
    m.backup_finished("daily", ok=True, duration_s=1.5, size_bytes=10_000, finished_at=T0)
    m.backup_finished("weekly", ok=False, duration_s=0.2, finished_at=T0)
    m.prune_finished("daily", 2, errors=1)
    m.archives_counted({"daily": 7, "weekly": 3})
    m.restore_finished(ok=True, finished_at=T0)
    m.drill_finished(ok=False, finished_at=T0)
    m.backup_dir_free(10**9)
    m.next_runs({"daily": T0 + timedelta(days=1), "weekly": None})
    m.control_request("status", ok=True)
    observe_database(sidecar, arrow_db)
    body = sidecar.get("/metrics").body
    for family in ("database_pages", "policy_last_success_age_seconds", "next_run_timestamp"):
        assert family.encode() in body
    done = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, (done.stdout + done.stderr).decode()
    assert done.stdout.strip() == b"", done.stdout.decode()


def test_healthz_ok(sidecar: Sidecar) -> None:
    """While nothing is wrong /healthz answers 200 with {"status": "ok"} as JSON."""
    reply = sidecar.get("/healthz")
    assert (reply.status, reply.content_type) == (200, "application/json")
    assert reply.json() == {"status": "ok"}


def test_healthz_follows_a_corrupted_database(
    sidecar: Sidecar, arrow_db: Path, tmp_path: Path
) -> None:
    """/healthz turns 503, naming the database, when a check finds it corrupt, and 200 again
    once a check finds it sound (after a restore)."""
    good_copy = tmp_path / "good.db"
    shutil.copy(arrow_db, good_copy)
    observe_database(sidecar, arrow_db)
    assert sidecar.get("/healthz").status == 200

    with arrow_db.open("r+b") as f:
        f.truncate(arrow_db.stat().st_size // 2)
    observe_database(sidecar, arrow_db)
    reply = sidecar.get("/healthz")
    assert reply.status == 503
    doc = reply.json()
    assert isinstance(doc, dict)
    assert doc["status"] == "unhealthy"
    (reason,) = doc["reasons"]
    assert "'arrow'" in reason and "corrupt" in reason
    assert b'backup_sidecar_database_healthy{database="arrow"} 0.0' in sidecar.get("/metrics").body

    shutil.copy(good_copy, arrow_db)
    observe_database(sidecar, arrow_db)
    assert sidecar.get("/healthz").json() == {"status": "ok"}


def test_healthz_follows_an_overdue_policy(sidecar: Sidecar) -> None:
    """A policy whose last success is older than its max age makes /healthz 503 until a new
    success brings it back to 200."""
    max_age = {"daily": timedelta(hours=26)}
    now = T0 + timedelta(hours=30)
    sidecar.health.set_overdue(overdue_policies({"daily": T0}, max_age, now=now))
    reply = sidecar.get("/healthz")
    assert reply.status == 503
    doc = reply.json()
    assert isinstance(doc, dict)
    assert any("'daily'" in r for r in doc["reasons"])
    sidecar.health.set_overdue(overdue_policies({"daily": now}, max_age, now=now))
    assert sidecar.get("/healthz").status == 200


def test_healthz_follows_restore_drills(sidecar: Sidecar) -> None:
    """A failed restore drill makes /healthz 503 with the drill's error; a passing one clears it."""
    sidecar.health.drill_finished(ok=False, error="archive 'daily_1' is corrupt")
    reply = sidecar.get("/healthz")
    assert reply.status == 503
    assert "daily_1" in reply.body.decode()
    sidecar.health.drill_finished(ok=True)
    assert sidecar.get("/healthz").status == 200


def test_head_and_unknown_paths(sidecar: Sidecar) -> None:
    """HEAD answers like GET without a body; any other path is 404."""
    head = sidecar.get("/healthz", method="HEAD")
    assert (head.status, head.body) == (200, b"")
    assert sidecar.get("/").status == 404
    assert sidecar.get("/metrics/extra").status == 404
    assert sidecar.get("/healthz/../admin").status == 404


def test_requests_print_nothing(sidecar: Sidecar, capfd: pytest.CaptureFixture[str]) -> None:
    """Serving requests writes no access-log lines to stderr (scrapes come every few seconds)."""
    capfd.readouterr()
    for path in ("/metrics", "/healthz", "/missing"):
        sidecar.get(path)
    assert capfd.readouterr().err == ""


def test_stalled_client_blocks_nobody(sidecar: Sidecar) -> None:
    """A client that connects and sends nothing does not delay other scrapes."""
    with socket.create_connection((sidecar.host, sidecar.port), timeout=10):
        assert sidecar.get("/healthz").status == 200
        assert sidecar.get("/metrics").status == 200


def test_concurrent_scrapes(sidecar: Sidecar) -> None:
    """Many clients at once all get complete answers while the state changes under them."""
    failures: list[str] = []
    start = threading.Barrier(9)

    def scrape() -> None:
        start.wait()
        for _ in range(20):
            reply = sidecar.get("/metrics")
            if reply.status != 200 or b"backup_sidecar_build_info" not in reply.body:
                failures.append(f"{reply.status}")

    threads = [threading.Thread(target=scrape) for _ in range(8)]
    for t in threads:
        t.start()
    start.wait()
    for _ in range(200):
        sidecar.metrics.backup_finished("daily", ok=True, duration_s=0.1, finished_at=T0)
    for t in threads:
        t.join()
    assert failures == []


def test_stop_closes_the_port_and_joins() -> None:
    """stop() stops listening, frees the port for reuse, ends the thread and may be repeated."""
    server = MetricsServer(registry=CollectorRegistry(), health=HealthState())
    host, port = server.start("127.0.0.1", 0)
    threads_before = {t.name for t in threading.enumerate()}
    assert "metrics-http" in threads_before
    server.stop()
    server.stop()
    assert "metrics-http" not in {t.name for t in threading.enumerate()}
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=5).close()
    again = MetricsServer(registry=CollectorRegistry(), health=HealthState())
    with again:
        assert again.start(host, port) == (host, port)


def test_start_twice_is_refused(sidecar: Sidecar) -> None:
    """A server already listening refuses a second start instead of leaking a thread."""
    with pytest.raises(RuntimeError, match="already started"):
        sidecar.server.start("127.0.0.1", 0)
