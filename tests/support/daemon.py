"""The real daemon as a subprocess: `python -m backup_sidecar --config FILE --log-format json run`.

`DaemonRunner.start(config)` writes the YAML, starts the process, parses its JSON log lines
from stderr as they arrive (`EventLog`) and waits for `daemon_started`; `close()` stops every
daemon it started (SIGTERM, then SIGKILL), closes its pipes, and fails the test if one logged
a crash event or a Python traceback. The `daemons` fixture (tests/conftest.py) is a runner.
Nothing here sleeps to synchronise: waits poll a condition or a log event up to a deadline.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import socket
import struct
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from socket import socket as RawSocket  # noqa: N812  (the class: Daemon.socket is a path)
from typing import Any

import yaml

from backup_sidecar.control import ControlClient, ControlError
from backup_sidecar.control.protocol import decode_reply
from support.cli import clean_env, cli_command, run_cli
from support.processes import terminate
from support.waiting import DEADLINE_S, EventLog

#: Events that only a bug produces; a daemon that logs one fails the test at teardown.
CRASH_EVENTS = frozenset(
    {"control_request_crashed", "control_loop_crashed", "health_check_crashed",
     "scheduled_run_failed", "http_request_failed", "ui_request_failed", "ui_action_crashed"}
)  # fmt: skip
#: How long a daemon may take to start, and to stop after SIGTERM.
START_S = STOP_S = 60.0


# --- configuration ------------------------------------------------------------------------------


def daemon_config(
    *,
    backup_dir: Path,
    databases: Mapping[str, Path],
    socket_path: Path,
    policies: dict[str, Any],
    **overrides: Any,
) -> dict[str, Any]:
    """A daemon YAML document: loopback metrics on a free port, health every second, a private
    socket. A dict override is merged into the section it names; anything else replaces."""
    cfg: dict[str, Any] = {
        "backup_dir": str(backup_dir),
        "databases": {name: {"path": str(path)} for name, path in databases.items()},
        "policies": policies,
        "health": {"interval": "1s", "max_backup_age": {}},
        "metrics": {"host": "127.0.0.1", "port": 0},
        "control": {"socket": str(socket_path), "mode": "0600"},
        "grace_period": "10s",
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


#: The fault suite's daemons: no scheduled policy, metrics off, health hourly, short deadlines.
QUIET: dict[str, Any] = {
    "policies": {"pre_restore": {"keep": 100}},
    "metrics": {"enabled": False},
    "health": {"interval": "1h"},
    "grace_period": "5s",
    "lock_timeout": "5s",
}
#: The backup- and clock-fault daemons: metrics on, short grace period and lock deadline.
FAULTS: dict[str, Any] = {"policies": {}, "grace_period": "5s", "lock_timeout": "10s"}


def quiet_config(**fields: Any) -> dict[str, Any]:
    """`daemon_config` with the `QUIET` defaults (a section given replaces the quiet one)."""
    return daemon_config(**{**QUIET, **fields})


def write_config(path: Path, config: dict[str, Any] | str) -> Path:
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    return path


def fault_config(path: Path, **fields: Any) -> Path:
    """`daemon_config` with the `FAULTS` defaults, written to ``path`` (for the CLI and the
    daemon alike)."""
    return write_config(path, daemon_config(**{**FAULTS, **fields}))


# --- one daemon ---------------------------------------------------------------------------------


@dataclass
class Daemon:
    """One running daemon process and the ways a test talks to it."""

    proc: subprocess.Popen[str]
    config_path: Path
    config: dict[str, Any]
    env: dict[str, str]
    log: EventLog
    metrics_port: int | None = None
    exit_code: int | None = None
    #: A daemon expected to log a crash (a bug injected on purpose) is not failed for it.
    crash_expected: bool = field(default=False)

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
        """The product's own client (what `ctl` uses)."""
        return ControlClient(self.socket, timeout_s=timeout_s)

    def connect(self, *, timeout: float = DEADLINE_S) -> RawSocket:
        """A raw connection to the control socket. The connect itself is blocking with a send
        timeout (a full backlog is waited for, as the real client does; Python's own timeout
        would fail at once with EAGAIN), then reads and writes time out after ``timeout``."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        whole = int(timeout)
        timeval = struct.pack("ll", whole, int((timeout - whole) * 1_000_000))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        sock.connect(str(self.socket))
        sock.settimeout(timeout)
        return sock

    def _replies(self, payload: bytes, *, timeout: float, half_close: bool) -> list[bytes]:
        with self.connect(timeout=timeout) as sock:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(payload)
                if half_close:
                    sock.shutdown(socket.SHUT_WR)
            data = bytearray()
            with contextlib.suppress(ConnectionResetError):
                while chunk := sock.recv(1 << 16):
                    data += chunk
        return [line for line in bytes(data).splitlines() if line.strip()]

    def exchange(
        self, payload: bytes, *, timeout: float = 120.0, half_close: bool = True
    ) -> list[dict[str, Any]]:
        """Send raw bytes (half-closing unless told not to) and read every reply line until
        the daemon closes the connection."""
        replies = self._replies(payload, timeout=timeout, half_close=half_close)
        return [json.loads(line) for line in replies]

    def request(self, op: str, *, timeout: float = 120.0, **fields: Any) -> dict[str, Any]:
        """One request, sent as written (the daemon, not a client, judges it); its result, or
        ControlError with the daemon's code and message. Every reply line must be one the
        protocol allows (as the real client decodes it): progress events, then the answer."""
        sent = json.dumps({"op": op, **fields}).encode() + b"\n"
        raw = self._replies(sent, timeout=timeout, half_close=True)
        lines = [json.loads(line) for line in raw]
        assert lines, "the daemon closed the connection without answering"
        final = lines[-1]
        assert "ok" in final, f"the daemon closed the connection before answering: {final}"
        assert all(line.get("event") == "progress" for line in lines[:-1]), lines
        for line in raw:
            decode_reply(line)
        if final.get("ok") is True:
            return dict(final["result"])
        raise ControlError(final["error"]["code"], final["error"]["message"])

    def ping(self) -> dict[str, Any]:
        return self.request("ping", timeout=DEADLINE_S)

    # -- the CLI -------------------------------------------------------------------------
    def ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`backup-sidecar --config FILE ctl ARGS...` as its own process (stdin not a TTY)."""
        return run_cli("ctl", *args, config=self.config_path, env=self.env, timeout=timeout)

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """The CLI run directly (not through the daemon) with this daemon's config."""
        return run_cli(*args, config=self.config_path, timeout=timeout)

    # -- files ---------------------------------------------------------------------------
    def archives(self, policy: str | None = None) -> list[Path]:
        """Archive files in the backup directory (of one policy), oldest name first."""
        prefix = f"{policy}_" if policy else ""
        return sorted(self.backup_dir.glob(f"{prefix}*.tar.gz"))

    def rewrite_config(self, config: dict[str, Any] | str) -> None:
        """Replace the YAML file atomically (the daemon reads it again on SIGHUP)."""
        tmp = write_config(self.config_path.with_suffix(".tmp"), config)
        tmp.replace(self.config_path)

    # -- process -------------------------------------------------------------------------
    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        self.exit_code = self.proc.wait(timeout=timeout)
        self.log.join()
        return self.exit_code

    def stop(self, *, timeout: float = STOP_S) -> int:
        """SIGTERM and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def rss_kb(self) -> int:
        """VmRSS of the daemon process, from /proc/PID/status."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc status")


# --- the runner ---------------------------------------------------------------------------------


class DaemonRunner:
    """Starts daemons in ``workdir``; `close()` stops them all and fails on a crash."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Daemon] = []

    def start(
        self,
        config: dict[str, Any] | str | Path,
        *,
        env: dict[str, str] | None = None,
        started_ok: bool = True,
        crash_expected: bool = False,
    ) -> Daemon:
        """Start a daemon on ``config`` (a document, YAML text, or a file already written) with
        ``env`` added to a clean environment. With ``started_ok`` (the default) this returns
        once the daemon logged `daemon_started`, else at once (a daemon expected to refuse)."""
        if isinstance(config, Path):
            path, text = config, config.read_text()
        else:
            path = write_config(self.workdir / f"sidecar-{len(self.started)}.yaml", config)
            text = path.read_text()
        full_env = clean_env(**(env or {}))
        proc = subprocess.Popen(
            cli_command("run", config=path),
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.workdir,
        )
        assert proc.stderr is not None
        doc = config if isinstance(config, dict) else yaml.safe_load(text)
        d = Daemon(proc=proc, config_path=path, config=doc, env=full_env,
                   log=EventLog(proc.stderr), crash_expected=crash_expected)  # fmt: skip
        self.started.append(d)
        if started_ok:
            d.log.wait("daemon_started", timeout=START_S)
            if doc.get("metrics", {}).get("enabled", True):
                d.metrics_port = int(d.log.find("metrics_listening")[0]["port"])
        return d

    def close(self) -> None:
        """Stop every daemon (SIGTERM; SIGKILL after `STOP_S`), close its pipes, and fail if
        one ignored SIGTERM or logged a crash event or a traceback."""
        problems = []
        for d in self.started:
            if not terminate(d.proc, timeout=STOP_S):
                problems.append(f"daemon {d.proc.pid} ignored SIGTERM for {STOP_S:g}s")
            d.log.join()
            d.proc.communicate()  # reaps it and closes its pipes: left to the GC they warn
            if d.crash_expected:
                continue
            crashes = [e for e in d.log.events if e["event"] in CRASH_EVENTS]
            tracebacks = [line for line in d.log.raw if line.startswith("Traceback")]
            if crashes or tracebacks:
                problems.append(f"daemon {d.proc.pid} logged {crashes or tracebacks}")
        assert not problems, problems
