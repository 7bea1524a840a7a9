"""Shared helpers of the fault-injection suite: the real CLI and the real daemon as subprocesses.

Everything here drives real processes against real files: `run_cli` runs
`python -m backup_sidecar ...`, the `daemon` fixture starts
`python -m backup_sidecar --config FILE --log-format json run` and parses its JSON log as it
arrives, `tmpfs` mounts a small real filesystem (skipped without the privilege to mount).
Nothing here sleeps to synchronise: waits poll a condition or a log event up to a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.conftest import EventLog

#: Default deadline for anything that should happen "soon".
DEADLINE_S = 30.0
#: Log events only a bug produces; a daemon that logs one fails its test at teardown.
CRASH_EVENTS = frozenset(
    {
        "control_request_crashed",
        "control_loop_crashed",
        "health_check_crashed",
        "scheduled_run_failed",
        "http_request_failed",
    }
)
ERROR_PREFIX = "backup-sidecar: error: "


# --- environment and the CLI ------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """This environment minus anything that would override a test's paths or YAML file."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("SIDECAR_") or k.endswith("_DATABASE_PATH") or k == "BACKUP_DIR")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def cli_env(backup_dir: Path, *, arrow: Path, user: Path, **extra: str) -> dict[str, str]:
    """The container's way of configuring the CLI: paths from the environment."""
    return clean_env(
        BACKUP_DIR=str(backup_dir),
        ARROW_DATABASE_PATH=str(arrow),
        USER_DATABASE_PATH=str(user),
        SIDECAR_LOG_FORMAT="json",
        **extra,
    )


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "backup_sidecar", *args]


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The real CLI as its own process; stdin is not a terminal."""
    return subprocess.run(
        cli_command(*args),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
    )


def is_log_record(line: str) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and "event" in record


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single `backup-sidecar: error: ...` line on stderr (JSON log records aside)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.strip().splitlines() if not is_log_record(ln)]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(ERROR_PREFIX), lines[0]
    return lines[0]


# --- databases ----------------------------------------------------------------------------------


def make_content_db(
    path: Path,
    *,
    rows: int,
    tag: str,
    wal: bool,
    blob: int = 64,
    page_size: int = 4096,
) -> Path:
    """A real database whose content is summed up by `digest`: table ``items`` holds ``rows``
    rows tagged ``tag`` with a random checksum column ``chk`` and a random blob of ``blob``
    bytes (incompressible, so the database's size is what an archive costs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA page_size={page_size}")
    conn.execute(f"PRAGMA journal_mode={'wal' if wal else 'delete'}")
    conn.execute(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, tag TEXT NOT NULL, chk INTEGER NOT NULL, "
        "body BLOB NOT NULL)"
    )
    conn.execute("CREATE INDEX items_chk ON items(chk)")
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "INSERT INTO items(tag, chk, body) SELECT ?, abs(random()) % 1000000007, randomblob(?) "
        "FROM n",
        (rows, tag, blob),
    )
    conn.commit()
    if wal:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


DIGEST_SQL = "SELECT count(*), total(chk), group_concat(DISTINCT tag) FROM items"


def make_ticked_db(path: Path, *, rows: int, blob: int, ticks: int) -> Path:
    """An archive's content for the no-commit-lost tests: ``rows`` items tagged 'archived' and
    ``ticks`` rows of table ``ticks`` (``n`` 1..ticks) from long ago, as a writer leaves them."""
    make_content_db(path, rows=rows, tag="archived", wal=False, blob=blob)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE ticks (n INTEGER PRIMARY KEY, at REAL)")
    conn.executemany(
        "INSERT INTO ticks(n, at) VALUES (?, ?)", [(i, 1000.0 + i) for i in range(1, ticks + 1)]
    )
    conn.commit()
    conn.close()
    return path


def digest(db: Path) -> tuple[int, float, str]:
    """(row count, sum of the checksum column, the tags present) of ``items``."""
    conn = sqlite3.connect(db, timeout=DEADLINE_S)
    try:
        count, total, tags = conn.execute(DIGEST_SQL).fetchone()
        return int(count), float(total), str(tags)
    finally:
        conn.close()


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db, timeout=DEADLINE_S)
    try:
        return "; ".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()


def journal_mode(db: Path) -> str:
    conn = sqlite3.connect(db, timeout=DEADLINE_S)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        conn.close()


# --- the file tree ------------------------------------------------------------------------------


def tree(root: Path, *, ignore: Callable[[str], bool] = lambda rel: False) -> dict[str, str]:
    """Every path under ``root`` -> kind, size and content digest of regular files (symlinks
    not followed): a before/after comparison shows anything created, removed or changed."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if ignore(rel):
                continue
            st = path.lstat()
            if path.is_symlink():
                out[rel] = f"link->{path.readlink()}"
            elif path.is_dir():
                out[rel] = "dir"
            elif path.is_file():
                out[rel] = f"file:{st.st_size}:{zlib.crc32(path.read_bytes()):08x}"
            else:
                out[rel] = f"special:{st.st_mode:o}"
    return out


def tree_diff(before: dict[str, str], after: dict[str, str]) -> dict[str, tuple[str | None, ...]]:
    keys = set(before) | set(after)
    return {k: (before.get(k), after.get(k)) for k in sorted(keys) if before.get(k) != after.get(k)}


# --- small real filesystems ---------------------------------------------------------------------


def mount_tmpfs(path: Path, *, size: str) -> str | None:
    """Mount a tmpfs of ``size`` on the (existing) directory ``path``; None on success, else
    why it could not be mounted (no privilege)."""
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        return f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}"
    return None


def unmount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Mount small tmpfs filesystems (``mount -t tmpfs -o size=...``); all unmounted at teardown.
    Skips the test, saying why, where mounting is not permitted."""
    mounted: list[Path] = []

    def mount(name: str, *, size: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        reason = mount_tmpfs(path, size=size)
        if reason is not None:
            pytest.skip(reason)
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        unmount(path)


def fill(directory: Path, *, leave: int) -> int:
    """Fill ``directory``'s filesystem until about ``leave`` bytes are free (others may be
    writing to it at the same time); returns the bytes left free."""

    def free() -> int:
        st = os.statvfs(directory)
        return st.f_bavail * st.f_frsize

    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        size = os.fstat(fd).st_size
        want = free() - leave
        while want >= 4096:
            try:
                os.posix_fallocate(fd, size, want)
                size += want
            except OSError:  # someone else took space meanwhile: take less
                want //= 2
                continue
            want = free() - leave
    finally:
        os.close(fd)
    return free()


# --- the real daemon ----------------------------------------------------------------------------


class SocketError(Exception):
    """The daemon answered ``{"ok": false, ...}``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class Daemon:
    """One running daemon process and raw access to its control socket."""

    proc: subprocess.Popen[str]
    config_path: Path
    config: dict[str, Any]
    log: EventLog
    env: dict[str, str] = field(default_factory=dict)

    @property
    def socket_path(self) -> Path:
        return Path(self.config["control"]["socket"])

    @property
    def backup_dir(self) -> Path:
        return Path(self.config["backup_dir"])

    def connect(self, *, timeout: float = DEADLINE_S) -> socket.socket:
        """A connection to the control socket. The connect itself is blocking with a send
        timeout (a full backlog is waited for, as the real client does; Python's own timeout
        would fail at once with EAGAIN), then reads and writes time out after ``timeout``."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        whole = int(timeout)
        timeval = struct.pack("ll", whole, int((timeout - whole) * 1_000_000))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        sock.connect(str(self.socket_path))
        sock.settimeout(timeout)
        return sock

    def exchange(self, payload: bytes, *, timeout: float = 120.0) -> list[dict[str, Any]]:
        """Send raw bytes, half-close, and read every reply line until the daemon closes."""
        with self.connect(timeout=timeout) as sock:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
            data = bytearray()
            while chunk := sock.recv(1 << 16):
                data += chunk
        return [json.loads(line) for line in data.splitlines() if line.strip()]

    def request(self, op: str, *, timeout: float = 120.0, **fields: Any) -> dict[str, Any]:
        """One request; its result, or SocketError with the daemon's code and message."""
        lines = self.exchange(json.dumps({"op": op, **fields}).encode() + b"\n", timeout=timeout)
        assert lines, "the daemon closed the connection without answering"
        final = lines[-1]
        assert "ok" in final, f"the daemon closed the connection before answering: {final}"
        assert all(line.get("event") == "progress" for line in lines[:-1]), lines
        if final.get("ok") is True:
            return dict(final["result"])
        raise SocketError(final["error"]["code"], final["error"]["message"])

    def ping(self) -> dict[str, Any]:
        return self.request("ping", timeout=DEADLINE_S)

    def rss_kb(self) -> int:
        """VmRSS of the daemon process, from /proc/PID/status."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc status")

    def rewrite_config(self, text: str) -> None:
        """Replace the YAML file atomically (the daemon reads it again on SIGHUP)."""
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.config_path)

    def stop(self, *, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.log.join()
        return code


def short_dir() -> Path:
    """A private directory with a short path (AF_UNIX socket paths must be < 108 bytes)."""
    return Path(tempfile.mkdtemp(prefix="bsr-", dir="/tmp"))


def daemon_config(
    *,
    backup_dir: Path,
    databases: dict[str, Path],
    socket_path: Path,
    policies: dict[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A daemon YAML document: no scheduled policy unless given, metrics off, a private socket."""
    cfg: dict[str, Any] = {
        "backup_dir": str(backup_dir),
        "databases": {name: {"path": str(path)} for name, path in databases.items()},
        "policies": policies if policies is not None else {"pre_restore": {"keep": 100}},
        "health": {"interval": "1h", "max_backup_age": {}},
        "metrics": {"enabled": False},
        "control": {"socket": str(socket_path), "mode": "0600"},
        "grace_period": "5s",
        "lock_timeout": "5s",
    }
    cfg.update(overrides)
    return cfg


class DaemonRunner:
    """Starts daemons; `close()` stops them all and fails on crash events or tracebacks."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Daemon] = []
        self._n = 0

    def start(self, config: dict[str, Any] | str, *, wait_started: bool = True) -> Daemon:
        self._n += 1
        path = self.workdir / f"sidecar-{self._n}.yaml"
        path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
        env = clean_env()
        proc = subprocess.Popen(
            cli_command("--config", str(path), "--log-format", "json", "run"),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.workdir,
        )
        assert proc.stderr is not None
        doc = config if isinstance(config, dict) else yaml.safe_load(config)
        d = Daemon(proc=proc, config_path=path, config=doc, log=EventLog(proc.stderr), env=env)
        self.started.append(d)
        if wait_started:
            d.log.wait("daemon_started", timeout=60)
        return d

    def close(self) -> None:
        problems = []
        for d in self.started:
            if d.proc.poll() is None:
                d.proc.send_signal(signal.SIGTERM)
                try:
                    d.proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    d.proc.kill()
                    d.proc.wait()
                    problems.append(f"daemon {d.proc.pid} ignored SIGTERM for 60s")
            d.log.join()
            if d.proc.stderr is not None:
                d.proc.stderr.close()
            crashes = [e for e in d.log.events if e["event"] in CRASH_EVENTS]
            tracebacks = [line for line in d.log.raw if line.startswith("Traceback")]
            if crashes or tracebacks:
                problems.append(f"daemon {d.proc.pid} logged {crashes or tracebacks}")
        assert not problems, problems


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[DaemonRunner]:
    """Real daemons for one test, SIGTERMed and checked for crash events at teardown."""
    runner = DaemonRunner(tmp_path)
    try:
        yield runner
    finally:
        runner.close()


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short-path directory for control sockets, removed at teardown."""
    path = short_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)
