"""The real daemon as a subprocess: `python -m backup_sidecar --config FILE --log-format json run`.

`daemon(config)` writes the YAML, starts the process, parses its JSON log lines from stderr as
they arrive and waits for `daemon_started`; every daemon is stopped with SIGTERM at teardown.
Nothing here sleeps to synchronise: waits poll a condition or a log event up to a deadline.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from backup_sidecar.control import ControlClient

#: Default deadline for anything the daemon should do "soon".
DEADLINE_S = 30.0
#: Events that only a bug produces; a daemon that logs one fails the test at teardown.
CRASH_EVENTS = frozenset(
    {"control_request_crashed", "control_loop_crashed", "health_check_crashed",
     "scheduled_run_failed", "http_request_failed"}
)  # fmt: skip


def wait_until(
    condition: Callable[[], Any], *, timeout: float = DEADLINE_S, what: str = "condition"
) -> Any:
    """Poll `condition` until it returns something truthy (returned) or the deadline passes."""
    deadline = time.monotonic() + timeout
    pause = 0.01
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(pause)  # the poll interval; the deadline above is what bounds the wait
        pause = min(pause * 2, 0.1)


class EventLog:
    """The daemon's stderr, parsed line by line in a background thread."""

    def __init__(self, stream: Any) -> None:
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._cond:
                self.raw.append(line.rstrip("\n"))
                with contextlib.suppress(ValueError):
                    doc = json.loads(line)
                    if isinstance(doc, dict) and "event" in doc:
                        self.events.append(doc)
                self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def mark(self) -> int:
        """A position: `wait(..., since=mark)` only looks at events logged after it."""
        with self._cond:
            return len(self.events)

    def find(self, event: str, *, since: int = 0, **fields: Any) -> list[dict[str, Any]]:
        with self._cond:
            return [
                e
                for e in self.events[since:]
                if e["event"] == event and all(e.get(k) == v for k, v in fields.items())
            ]

    def wait(
        self, event: str, *, since: int = 0, timeout: float = DEADLINE_S, count: int = 1,
        **fields: Any,
    ) -> dict[str, Any]:  # fmt: skip
        """The `count`-th matching event after `since`, waiting for it up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = self.find(event, since=since, **fields)
                if len(found) >= count:
                    return found[count - 1]
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    tail = "\n".join(self.raw[-15:])
                    raise AssertionError(
                        f"no {event} {fields or ''} (x{count}) within {timeout}s; log tail:\n{tail}"
                    )
                self._cond.wait(left)

    def join(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)


@dataclass
class Daemon:
    """One running daemon process and the ways a test talks to it."""

    proc: subprocess.Popen[str]
    config_path: Path
    config: dict[str, Any]
    env: dict[str, str]
    log: EventLog
    metrics_port: int | None = None
    exit_code: int | None = field(default=None)

    @property
    def socket(self) -> Path:
        return Path(self.config["control"]["socket"])

    @property
    def backup_dir(self) -> Path:
        return Path(self.config["backup_dir"])

    # -- HTTP ----------------------------------------------------------------------------
    def get(self, path: str) -> tuple[int, bytes]:
        assert self.metrics_port is not None, "metrics are disabled in this daemon's config"
        conn = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def scrape(self) -> str:
        status, body = self.get("/metrics")
        assert status == 200, body
        return body.decode()

    def healthz(self) -> tuple[int, dict[str, Any]]:
        status, body = self.get("/healthz")
        return status, json.loads(body)

    # -- control socket ------------------------------------------------------------------
    def client(self, *, timeout_s: float = 60.0) -> ControlClient:
        return ControlClient(self.socket, timeout_s=timeout_s)

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        return self.client().request({"op": op, **fields})

    def ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`backup-sidecar --config FILE ctl ARGS...` as its own process (stdin not a TTY)."""
        return subprocess.run(
            [sys.executable, "-m", "backup_sidecar", "--config", str(self.config_path),
             "--log-format", "json", "ctl", *args],
            env=self.env, capture_output=True, text=True, timeout=timeout, check=False,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """The CLI run directly (not through the daemon) with this daemon's config."""
        return run_cli(self.config_path, *args, timeout=timeout)

    # -- files ---------------------------------------------------------------------------
    def archives(self, policy: str | None = None) -> list[Path]:
        """Archive files in the backup directory (of one policy), oldest name first."""
        prefix = f"{policy}_" if policy else ""
        return sorted(self.backup_dir.glob(f"{prefix}*.tar.gz"))

    def rewrite_config(self, config: dict[str, Any] | str) -> None:
        """Replace the YAML file atomically (the daemon reads it again on SIGHUP)."""
        text = config if isinstance(config, str) else yaml.safe_dump(config)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.config_path)

    # -- process -------------------------------------------------------------------------
    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        self.exit_code = self.proc.wait(timeout=timeout)
        self.log.join()
        return self.exit_code

    def stop(self, *, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def run_cli(
    config_path: Path, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`backup-sidecar --config FILE --log-format json ARGS...` as its own process."""
    return subprocess.run(
        [sys.executable, "-m", "backup_sidecar", "--config", str(config_path),
         "--log-format", "json", *args],
        env=daemon_env(), capture_output=True, text=True, timeout=timeout, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def short_dir() -> Path:
    """A private directory with a short path (AF_UNIX socket paths must be < 108 bytes)."""
    return Path(tempfile.mkdtemp(prefix="bsd-", dir="/tmp"))


def daemon_env() -> dict[str, str]:
    """The environment minus anything that would override the test's YAML file."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("SIDECAR_") or k.endswith("_DATABASE_PATH") or k == "BACKUP_DIR")
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short-path directory for control sockets, removed at teardown."""
    path = short_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemon_config(backup_dir: Path, sock_dir: Path) -> Callable[..., dict[str, Any]]:
    """Build a daemon YAML document: loopback metrics on a free port, a socket in `sock_dir`."""

    def build(
        *, databases: dict[str, Path], policies: dict[str, Any], **overrides: Any
    ) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "backup_dir": str(backup_dir),
            "databases": {name: {"path": str(path)} for name, path in databases.items()},
            "policies": policies,
            "health": {"interval": "1s", "max_backup_age": {}},
            "metrics": {"host": "127.0.0.1", "port": 0},
            "control": {"socket": str(sock_dir / "control.sock"), "mode": "0600"},
            "grace_period": "10s",
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
        return cfg

    return build


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Start daemons from YAML documents; each is SIGTERMed and reaped at teardown.

    `daemon(cfg)` returns once the daemon logged `daemon_started` (with `started=False`, at
    once: for a daemon expected to refuse to start). At teardown a daemon that logged a crash
    event or a Python traceback fails the test.
    """
    started: list[Daemon] = []
    counter = iter(range(1000))

    def start(config: dict[str, Any], *, started_ok: bool = True) -> Daemon:
        path = write_config(tmp_path / f"sidecar-{next(counter)}.yaml", config)
        env = daemon_env()
        proc = subprocess.Popen(
            [sys.executable, "-m", "backup_sidecar", "--config", str(path),
             "--log-format", "json", "run"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        )  # fmt: skip
        assert proc.stderr is not None
        d = Daemon(proc=proc, config_path=path, config=config, env=env, log=EventLog(proc.stderr))
        started.append(d)
        if started_ok:
            d.log.wait("daemon_started", timeout=30)
            if config.get("metrics", {}).get("enabled", True):
                d.metrics_port = int(d.log.find("metrics_listening")[0]["port"])
        return d

    yield start
    problems = []
    for d in started:
        if d.proc.poll() is None:
            d.proc.send_signal(signal.SIGTERM)
            try:
                d.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                d.proc.kill()
                d.proc.wait()
                problems.append(f"daemon {d.proc.pid} ignored SIGTERM for 60s")
        d.log.join()
        for stream in (d.proc.stdout, d.proc.stderr):
            if stream is not None:
                stream.close()
        crashes = [e for e in d.log.events if e["event"] in CRASH_EVENTS]
        tracebacks = [line for line in d.log.raw if line.startswith("Traceback")]
        if crashes or tracebacks:
            problems.append(f"daemon {d.proc.pid} logged {crashes or tracebacks}")
    assert not problems, problems


# --- metrics -----------------------------------------------------------------------------------


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus text exposition, None if absent."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


# --- databases and locks -----------------------------------------------------------------------


def row_count(db: Path, table: str = "items") -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


@contextlib.contextmanager
def holding_database_lock(backup_dir: Path, name: str) -> Iterator[None]:
    """Hold `<backup_dir>/.locks/db-<name>.lock` as a running backup/restore/prune would.

    Taking it waits for a run of the daemon's own that holds it now (a scheduled backup of the
    database may be under way when the test asks): refusing then made a long test flaky."""
    locks = backup_dir / ".locks"
    locks.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(locks / f"db-{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def make_big_db(path: Path, *, megabytes: int) -> Path:
    """A WAL database of about `megabytes` MB of incompressible rows, generated in SQL."""
    rows = megabytes * 1024 * 1024 // 4000
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "INSERT INTO items(body) SELECT randomblob(4000) FROM n",
        (rows,),
    )
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


@pytest.fixture(scope="session")
def big_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ~200 MB WAL database per session; tests take copies (`big_db`)."""
    return make_big_db(tmp_path_factory.mktemp("big") / "template.db", megabytes=200)


@pytest.fixture
def big_db(tmp_path: Path, big_db_template: Path) -> Path:
    """A private ~200 MB WAL database: its backup takes seconds."""
    dest = tmp_path / "big" / "user_data.db"
    dest.parent.mkdir()
    shutil.copyfile(big_db_template, dest)
    return dest


def stop_writer(writer: Any) -> dict[str, Any]:
    """Stop a `writer_process` and return its report. (The shared Writer.stop closes stdin and
    then calls communicate(), which flushes the closed pipe and raises ValueError.)"""
    out, err = writer.proc.communicate(timeout=60)  # closing stdin is the writer's stop signal
    assert writer.proc.returncode == 0, err
    return dict(json.loads(out))
