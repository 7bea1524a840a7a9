"""The control socket: protocol, server and client over a real Unix socket in a temp directory."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backup_sidecar import errors
from backup_sidecar.control import (
    ArchiveEntry,
    BackupRequest,
    BackupResult,
    ControlClient,
    ControlError,
    ControlServer,
    ControlSocketError,
    DaemonConnectionError,
    DaemonNotRunningError,
    ListResult,
    PeerCred,
    ProtocolError,
    PruneResult,
    Request,
    RestoreRequest,
    RestoreResult,
    Result,
    StatusResult,
    VerifyResult,
    decode_request,
    error_code,
    is_daemon_running,
)
from backup_sidecar.control.protocol import INTERNAL_ERROR_MESSAGE, decode_reply

WAIT_S = 10.0
ARCHIVES = ["daily_20261125_030000", "weekly_20261123_033000"]
DATABASES = ("arrow", "user")


class RecordingLogger:
    """A structlog-like logger that keeps every call and lets a test wait for an event."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self._changed = threading.Condition()

    def _add(self, level: str, event: str, kw: dict[str, Any]) -> None:
        with self._changed:
            self.records.append({"level": level, "event": event, **kw})
            self._changed.notify_all()

    def info(self, event: str, **kw: Any) -> None:
        self._add("info", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._add("warning", event, kw)

    def error(self, event: str, **kw: Any) -> None:
        self._add("error", event, kw)

    def events(self, event: str) -> list[dict[str, Any]]:
        with self._changed:
            return [r for r in self.records if r["event"] == event]

    def wait_for(self, event: str, timeout: float = WAIT_S) -> dict[str, Any]:
        with self._changed:
            found = self._changed.wait_for(lambda: self.events(event), timeout=timeout)
        assert found, f"no {event!r} logged within {timeout}s: {self.records}"
        return found[0]


def status_result(*, busy: list[str]) -> StatusResult:
    return StatusResult(
        version="0",
        healthy=not busy,
        reasons=[f"{name} is busy" for name in busy],
        unknown=[],
        backup_dir="/backups",
        databases={name: f"/data/{name}.db" for name in DATABASES},
        next_runs={"daily": "2026-11-25T03:00:00+00:00", "manual": None},
    )


def list_result(*, padding: str = "") -> ListResult:
    """Every archive; ``padding`` in the first one's error makes the answer as large as asked."""
    return ListResult(
        archives=[
            ArchiveEntry(
                name=name,
                path=f"/backups/{name}.tar.gz",
                created_at="2026-11-25T03:00:00+00:00",
                size_bytes=1024,
                databases=list(DATABASES),
                policy=name.split("_")[0],
                status="verified",
                verified=True,
                error=padding if i == 0 else None,
                sequence=i + 1,
            )
            for i, name in enumerate(ARCHIVES)
        ]
    )


def verify_result(archive: str) -> VerifyResult:
    return VerifyResult(
        archive=archive,
        path=f"/backups/{archive}.tar.gz",
        legacy=False,
        databases=list(DATABASES),
        warnings=[],
    )


def restore_result(archive: str, restored: list[str], *, dry_run: bool) -> RestoreResult:
    return RestoreResult(
        archive=archive,
        dry_run=dry_run,
        restored=restored,
        pre_restore_archive="pre_1",
        damaged=[],
        plan=[],
    )


def prune_result(*, dry_run: bool) -> PruneResult:
    return PruneResult(
        dry_run=dry_run, deleted=ARCHIVES[1:], skipped_busy=[], errors=[], damaged=[]
    )


class ShopHandler:
    """A real Handler: per-database locks like the service's, and a gate to hold a backup open."""

    def __init__(self) -> None:
        self.calls: list[tuple[Request, PeerCred]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.list_payload = 0
        self._busy: set[str] = set()
        self._lock = threading.Lock()

    def handle(
        self, request: Request, *, progress: Callable[[str, int, int], None], peer: PeerCred
    ) -> Result:
        self.calls.append((request, peer))
        if request.op == "status":
            return status_result(busy=sorted(self._busy))
        if request.op == "list":
            return list_result(padding="x" * self.list_payload)
        if request.op == "backup":
            return self._backup(request, progress)
        if request.op == "verify":
            return verify_result(self._find(request.archive))
        if request.op == "restore":
            dbs = self._databases(request.databases)
            assert request.archive is not None  # (this shop restores local archives only)
            return restore_result(self._find(request.archive), dbs, dry_run=request.dry_run)
        if request.op == "prune":
            if request.policy == "explode":
                raise RuntimeError("a bug in the handler")
            if request.policy == "locked":
                raise errors.DatabaseLockedError("user", Path("/x/user_data.db"), 5.0)
            return prune_result(dry_run=request.dry_run)
        raise AssertionError(f"unexpected op {request.op}")

    def _find(self, archive: str) -> str:
        if archive == "broken_1":
            raise errors.CorruptArchiveError(archive, "gzip CRC mismatch")
        if archive not in ARCHIVES:
            raise errors.ArchiveNotFoundError(archive)
        return archive

    def _databases(self, names: list[str] | None) -> list[str]:
        for name in names or ():
            if name not in DATABASES:
                raise errors.UnknownDatabaseError(name, DATABASES)
        return list(names or DATABASES)

    def _backup(
        self, request: BackupRequest, progress: Callable[[str, int, int], None]
    ) -> BackupResult:
        dbs = self._databases(request.databases)
        with self._lock:
            if held := self._busy.intersection(dbs):
                raise errors.BusyError(sorted(held)[0])
            self._busy.update(dbs)
        try:
            progress("snapshot", 0, len(dbs))
            self.entered.set()
            if not self.gate.wait(WAIT_S):
                raise errors.OperationAbortedError("test backup")
            for i, _ in enumerate(dbs, start=1):
                progress("snapshot", i, len(dbs))
            progress("pack", 1, 1)
            return BackupResult(archive=f"{request.policy}_1", size_bytes=0, databases=dbs)
        finally:
            with self._lock:
                self._busy.difference_update(dbs)


@pytest.fixture
def log() -> RecordingLogger:
    return RecordingLogger()


@pytest.fixture
def handler() -> ShopHandler:
    return ShopHandler()


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "run" / "control.sock"


@pytest.fixture
def make_server(
    socket_path: Path, handler: ShopHandler, log: RecordingLogger
) -> Iterator[Callable[..., ControlServer]]:
    started: list[ControlServer] = []

    def make(**kw: Any) -> ControlServer:
        server = ControlServer(kw.pop("path", socket_path), handler=handler, log=log, **kw)
        server.start()
        started.append(server)
        return server

    yield make
    handler.gate.set()
    for server in started:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., ControlServer]) -> ControlServer:
    return make_server()


@pytest.fixture
def client(socket_path: Path) -> ControlClient:
    return ControlClient(socket_path, timeout_s=WAIT_S)


def connect(path: Path) -> socket.socket:
    """A raw client socket; the connect blocks while the server's backlog is full."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        raise
    sock.settimeout(WAIT_S)
    return sock


def read_lines(sock: socket.socket) -> list[bytes]:
    """Everything the server sends until it closes (a reset after the data counts as closed)."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data.splitlines(keepends=True)


def exchange(path: Path, payload: bytes) -> list[bytes]:
    with connect(path) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(payload)
        return read_lines(sock)


def error_of(line: bytes) -> tuple[str, str]:
    reply = decode_reply(line)
    assert reply.ok is False  # type: ignore[union-attr]
    return reply.error.code, reply.error.message  # type: ignore[union-attr]


def test_ping_is_answered_by_the_server_itself(
    server: ControlServer, client: ControlClient, handler: ShopHandler
) -> None:
    """Ping proves the daemon is alive without involving the handler."""
    result = client.request({"op": "ping"})
    assert result["pong"] is True
    assert result["pid"] == os.getpid()
    assert handler.calls == []


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        ({"op": "status"}, status_result(busy=[])),
        ({"op": "list"}, list_result()),
        (
            {"op": "backup", "databases": ["user"]},
            BackupResult(archive="manual_1", size_bytes=0, databases=["user"]),
        ),
        ({"op": "verify", "archive": ARCHIVES[0]}, verify_result(ARCHIVES[0])),
        (
            {"op": "restore", "archive": ARCHIVES[0], "databases": ["user"], "confirm": True},
            restore_result(ARCHIVES[0], ["user"], dry_run=False),
        ),
        ({"op": "prune", "dry_run": True}, prune_result(dry_run=True)),
    ],
)
def test_every_op_round_trips(
    server: ControlServer,
    client: ControlClient,
    handler: ShopHandler,
    request_: dict[str, Any],
    expected: Result,
) -> None:
    """Each op reaches the handler as its validated model with the caller's identity, and its
    result model comes back as the same model (`call`) and as the same JSON object (`request`)."""
    assert client.call(request_) == expected
    assert client.request(request_) == expected.model_dump(mode="json")
    [(received, peer), again] = handler.calls
    assert again == (received, peer)
    assert {"op": received.op, **received.model_dump(exclude_defaults=True)} == request_
    assert peer == PeerCred(pid=os.getpid(), uid=os.getuid(), gid=os.getgid())


def test_restore_without_confirm_is_refused_before_the_handler(
    server: ControlServer, client: ControlClient, handler: ShopHandler
) -> None:
    """Every handler gets the confirm rule: no confirm, no dry run -> refused, handler unused."""
    with pytest.raises(ControlError) as caught:
        client.request(RestoreRequest(archive=ARCHIVES[0]))
    assert caught.value.code == "refused"
    assert '"confirm": true' in caught.value.message
    assert handler.calls == []


def test_restore_dry_run_needs_no_confirm(server: ControlServer, client: ControlClient) -> None:
    """A dry run changes nothing, so it is passed to the handler without confirm."""
    result = client.request({"op": "restore", "archive": ARCHIVES[0], "dry_run": True})
    assert result["dry_run"] is True


def test_progress_events_arrive_in_order_before_the_response(
    server: ControlServer, socket_path: Path, client: ControlClient
) -> None:
    """Progress lines stream in the handler's order and the response line comes last."""
    seen: list[tuple[str, int, int]] = []
    result = client.request({"op": "backup"}, on_progress=lambda *e: seen.append(e))
    assert seen == [("snapshot", 0, 2), ("snapshot", 1, 2), ("snapshot", 2, 2), ("pack", 1, 1)]
    assert result["archive"] == "manual_1"

    lines = exchange(socket_path, b'{"op": "backup"}\n')
    kinds = [decode_reply(line) for line in lines]
    assert [getattr(k, "event", None) for k in kinds] == ["progress"] * 4 + [None]
    assert all(line.endswith(b"\n") for line in lines)


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        ({"op": "verify", "archive": "nope_1"}, "not_found", "no archive named 'nope_1'"),
        ({"op": "verify", "archive": "broken_1"}, "corrupt", "gzip CRC mismatch"),
        ({"op": "backup", "databases": ["cats"]}, "bad_request", "unknown database 'cats'"),
        ({"op": "prune", "policy": "locked"}, "failed", "still locked"),
    ],
)
def test_handler_errors_map_to_codes(
    server: ControlServer, client: ControlClient, request_: dict[str, Any], code: str, message: str
) -> None:
    """The handler's exceptions reach the client as the protocol code and their own message."""
    with pytest.raises(ControlError) as caught:
        client.request(request_)
    assert caught.value.code == code
    assert message in caught.value.message


def test_handler_bug_is_failed_with_a_generic_message_and_logged(
    server: ControlServer, client: ControlClient, log: RecordingLogger
) -> None:
    """An unexpected exception leaks nothing to the client and is logged with its traceback."""
    with pytest.raises(ControlError) as caught:
        client.request({"op": "prune", "policy": "explode"})
    assert (caught.value.code, caught.value.message) == ("failed", INTERNAL_ERROR_MESSAGE)
    [record] = log.events("control_request_crashed")
    assert record["level"] == "error"
    assert record["exc_info"] is True
    assert client.request({"op": "ping"})["pong"] is True


def test_second_backup_of_a_held_database_is_busy(
    server: ControlServer, socket_path: Path, handler: ShopHandler
) -> None:
    """BusyError from the handler while another backup runs reaches the client as ``busy``."""
    handler.gate.clear()
    results: list[dict[str, Any]] = []
    first = threading.Thread(
        target=lambda: results.append(
            ControlClient(socket_path, timeout_s=WAIT_S).request({"op": "backup"})
        )
    )
    first.start()
    assert handler.entered.wait(WAIT_S)
    with pytest.raises(ControlError) as caught:
        ControlClient(socket_path, timeout_s=WAIT_S).request({"op": "backup"})
    assert caught.value.code == "busy"
    handler.gate.set()
    first.join(WAIT_S)
    assert results == [{"archive": "manual_1", "size_bytes": 0, "databases": ["arrow", "user"]}]


@pytest.mark.parametrize("archive", ["/etc/passwd", "../x", "./x", "a/b", ".hidden"])
def test_archive_paths_are_bad_requests(
    server: ControlServer, socket_path: Path, client: ControlClient, archive: str
) -> None:
    """Archives are named, never given as paths: the client and the server both refuse them."""
    with pytest.raises(ProtocolError, match="archives are named, never given as paths"):
        client.request({"op": "verify", "archive": archive})
    [line] = exchange(socket_path, b'{"op": "verify", "archive": "%s"}\n' % archive.encode())
    code, message = error_of(line)
    assert code == "bad_request"
    assert "archives are named, never given as paths" in message


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xfe\xfd\n",
        b"garbage\n",
        b"\x00\x01\x02\x03\n",
        b"[1, 2]\n",
        b'{"op": "format_disk"}\n',
        b'{"op": "backup", "wait": "yes"}\n',
        b'{"op": "list", "extra": 1}\n',
        b'{"op": "prune", "keep": -1}\n',
        b'{"op": "restore", "archive": "daily_20261125_030000", "confirm": true, '
        b'"databases": []}\n',
        b'{"op": "backup", "databases": []}\n',
        b"\n",
    ],
)
def test_invalid_requests_are_bad_requests_and_the_server_goes_on(
    server: ControlServer, socket_path: Path, client: ControlClient, payload: bytes
) -> None:
    """Invalid UTF-8, garbage, unknown ops and wrong types get ``bad_request``, nothing crashes;
    an empty ``databases`` list is refused, never read as "every database"."""
    [line] = exchange(socket_path, payload)
    assert error_of(line)[0] == "bad_request"
    assert client.request({"op": "ping"})["pong"] is True


def test_oversized_request_is_refused_and_the_server_goes_on(
    server: ControlServer, socket_path: Path, client: ControlClient
) -> None:
    """A request line over 64 KiB is answered bad_request and closed; a 64 KiB one is fine."""
    exact = b'{"op": "ping"}'.ljust(65536) + b"\n"
    [line] = exchange(socket_path, exact)
    assert decode_reply(line).ok is True  # type: ignore[union-attr]

    over = b'{"op": "ping"}'.ljust(65537) + b"\n"
    [line] = exchange(socket_path, over)
    assert error_of(line) == ("bad_request", "request exceeds 65536 bytes")
    assert client.request({"op": "ping"})["pong"] is True


def test_endless_line_is_cut_off_at_the_limit(
    server: ControlServer, socket_path: Path, client: ControlClient
) -> None:
    """A client streaming bytes with no newline is answered and closed once it passes the limit."""
    [line] = exchange(socket_path, b"a" * (4 * 1024 * 1024))
    assert error_of(line) == ("bad_request", "request exceeds 65536 bytes")
    assert client.request({"op": "ping"})["pong"] is True


def test_unterminated_request_is_answered_when_the_client_half_closes(
    server: ControlServer, socket_path: Path
) -> None:
    """A request whose writer shuts down its side without a newline is still a whole request."""
    with connect(socket_path) as sock:
        sock.sendall(b'{"op": "ping"}')
        sock.shutdown(socket.SHUT_WR)
        [line] = read_lines(sock)
    assert decode_reply(line).ok is True  # type: ignore[union-attr]


@pytest.mark.parametrize("partial", [b"", b'{"op": "pi'])
def test_client_that_never_finishes_its_line_is_closed_at_the_read_deadline(
    make_server: Callable[..., ControlServer], socket_path: Path, partial: bytes
) -> None:
    """A silent or stalled client holds its connection for read_timeout_s, not forever."""
    make_server(read_timeout_s=0.5)
    with connect(socket_path) as sock:
        started = time.monotonic()
        sock.sendall(partial)
        lines = read_lines(sock)  # blocks until the server closes
        elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 0.5 + 2.0
    assert error_of(lines[0]) == ("bad_request", "no complete request line within 0.5s")


def test_client_disconnecting_mid_response_breaks_nothing(
    server: ControlServer, socket_path: Path, handler: ShopHandler, log: RecordingLogger
) -> None:
    """A client that hangs up after the first progress line is logged; the request completes."""
    handler.gate.clear()
    with connect(socket_path) as sock:
        sock.sendall(b'{"op": "backup"}\n')
        assert handler.entered.wait(WAIT_S)
        assert sock.recv(4096).startswith(b'{"event":"progress"')
    handler.gate.set()
    gone = log.wait_for("control_client_gone")
    assert gone["op"] == "backup"
    assert log.wait_for("control_request_completed")["op"] == "backup"
    assert ControlClient(socket_path, timeout_s=WAIT_S).request({"op": "ping"})["pong"]


def test_client_that_never_reads_its_response_times_out(
    make_server: Callable[..., ControlServer],
    socket_path: Path,
    handler: ShopHandler,
    log: RecordingLogger,
) -> None:
    """A response the client never reads frees its worker after write_timeout_s."""
    server = make_server(write_timeout_s=0.5)
    handler.list_payload = 32 * 1024 * 1024
    with connect(socket_path) as sock:
        sock.sendall(b'{"op": "list"}\n')
        assert ControlClient(socket_path, timeout_s=WAIT_S).request({"op": "ping"})["pong"]
        gone = log.wait_for("control_client_gone")
        assert gone["op"] == "list"
        assert "timed out" in gone["error"]
        assert server.open_connections == 0


def test_held_open_connections_are_bounded_and_do_not_lock_out_clients(
    server: ControlServer, socket_path: Path, client: ControlClient
) -> None:
    """500 idle connections cost at most max_connections slots and a fresh client is answered."""
    threads_before = threading.active_count()
    idle: list[socket.socket] = []
    try:
        idle.extend(connect(socket_path) for _ in range(500))
        assert client.request({"op": "ping"})["pong"] is True
        assert server.open_connections <= 64
        assert threading.active_count() <= threads_before + 1
        code, message = error_of(read_lines(idle[0])[0])
        assert code == "busy"
        assert "idle connection closed" in message
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + WAIT_S
    while server.open_connections and time.monotonic() < deadline:
        time.sleep(0.01)  # polling the server's own count; no event marks "all closed"
    assert server.open_connections == 0


def test_connections_beyond_the_cap_get_busy_when_all_are_working(
    make_server: Callable[..., ControlServer], socket_path: Path, handler: ShopHandler
) -> None:
    """When every slot runs a request, a new connection is answered ``busy`` at once."""
    make_server(max_connections=1)
    handler.gate.clear()
    worker = threading.Thread(
        target=ControlClient(socket_path, timeout_s=WAIT_S).request, args=({"op": "backup"},)
    )
    worker.start()
    assert handler.entered.wait(WAIT_S)
    with pytest.raises(ControlError) as caught:
        ControlClient(socket_path, timeout_s=WAIT_S).request({"op": "ping"})
    assert caught.value.code == "busy"
    assert "too many control connections (1)" in caught.value.message
    handler.gate.set()
    worker.join(WAIT_S)


def test_stale_socket_is_replaced(
    make_server: Callable[..., ControlServer], socket_path: Path, client: ControlClient
) -> None:
    """A socket file left by a dead daemon is removed and the new server answers on the path."""
    socket_path.parent.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(socket_path))
    assert stat.S_ISSOCK(socket_path.lstat().st_mode)
    assert not is_daemon_running(socket_path)
    make_server()
    assert client.request({"op": "ping"})["pong"] is True


def test_live_socket_is_not_taken_over(
    server: ControlServer, socket_path: Path, handler: ShopHandler, client: ControlClient
) -> None:
    """A second server refuses a path another server answers on, and the first keeps serving."""
    second = ControlServer(socket_path, handler=handler, log=RecordingLogger())
    with pytest.raises(ControlSocketError, match="another process is listening"):
        second.start()
    assert client.request({"op": "ping"})["pong"] is True


def test_regular_file_at_the_path_is_refused_and_left_untouched(
    socket_path: Path, handler: ShopHandler
) -> None:
    """Only a socket is ever replaced: a regular file at the path stays byte for byte."""
    socket_path.parent.mkdir()
    socket_path.write_bytes(b"precious")
    server = ControlServer(socket_path, handler=handler, log=RecordingLogger())
    with pytest.raises(ControlSocketError, match="not a socket; refusing to replace it"):
        server.start()
    assert socket_path.read_bytes() == b"precious"


@pytest.mark.parametrize("mode", [0o660, 0o600])
def test_socket_mode_is_the_configured_one_and_never_wider(
    make_server: Callable[..., ControlServer],
    socket_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: int,
) -> None:
    """Even under umask 0 the socket is created private, then chmod-ed to exactly ``mode``."""
    modes_before_chmod: list[int] = []
    real_chmod = Path.chmod

    def observing_chmod(path: Path, new_mode: int, **kw: Any) -> None:
        modes_before_chmod.append(stat.S_IMODE(path.lstat().st_mode))
        real_chmod(path, new_mode, **kw)

    monkeypatch.setattr(Path, "chmod", observing_chmod)
    previous = os.umask(0)
    try:
        make_server(mode=mode)
        assert os.umask(0) == 0  # the private umask was put back
    finally:
        os.umask(previous)
    assert modes_before_chmod == [0o700]
    assert stat.S_IMODE(socket_path.lstat().st_mode) == mode


def test_socket_file_is_removed_on_stop(
    make_server: Callable[..., ControlServer], socket_path: Path
) -> None:
    """Stopping removes the socket file, so clients see "no daemon" instead of a stale socket."""
    server = make_server()
    assert is_daemon_running(socket_path)
    server.stop()
    assert not socket_path.exists()
    assert not is_daemon_running(socket_path)


def test_stop_lets_a_running_request_finish(
    server: ControlServer, socket_path: Path, handler: ShopHandler, log: RecordingLogger
) -> None:
    """Stop closes the listener at once but waits for a request in flight to answer."""
    handler.gate.clear()
    results: list[dict[str, Any]] = []
    worker = threading.Thread(
        target=lambda: results.append(
            ControlClient(socket_path, timeout_s=WAIT_S).request({"op": "backup"})
        )
    )
    worker.start()
    assert handler.entered.wait(WAIT_S)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    assert log.wait_for("control_draining")["in_flight"] == 1
    with pytest.raises(DaemonNotRunningError):
        ControlClient(socket_path, timeout_s=WAIT_S).request({"op": "ping"})
    handler.gate.set()
    stopper.join(WAIT_S)
    worker.join(WAIT_S)
    assert results == [{"archive": "manual_1", "size_bytes": 0, "databases": ["arrow", "user"]}]
    assert not socket_path.exists()


def test_stop_gives_up_on_a_request_after_the_grace_time(
    make_server: Callable[..., ControlServer],
    socket_path: Path,
    handler: ShopHandler,
    log: RecordingLogger,
) -> None:
    """A request still running after stop_timeout_s has its connection cut; stop returns."""
    server = make_server(stop_timeout_s=0.2)
    handler.gate.clear()
    with connect(socket_path) as sock:
        sock.sendall(b'{"op": "backup"}\n')
        assert handler.entered.wait(WAIT_S)
        server.stop()
        assert log.events("control_stop_timeout")[0]["in_flight"] == 1
        read_lines(sock)  # cut off: the server shut the connection down
    handler.gate.set()
    assert log.wait_for("control_client_gone")["op"] == "backup"


def test_peer_identity_is_logged_with_the_op(
    server: ControlServer, client: ControlClient, log: RecordingLogger
) -> None:
    """Every request is logged with the caller's uid, gid and pid from SO_PEERCRED."""
    client.request({"op": "status"})
    record = log.wait_for("control_request")
    assert record == {
        "level": "info",
        "event": "control_request",
        "op": "status",
        "peer_uid": os.getuid(),
        "peer_gid": os.getgid(),
        "peer_pid": os.getpid(),
    }


def test_client_without_daemon_says_so_in_one_line(socket_path: Path) -> None:
    """No socket file: one clear line naming the path, and is_daemon_running is False."""
    with pytest.raises(DaemonNotRunningError) as caught:
        ControlClient(socket_path, timeout_s=1.0).request({"op": "ping"})
    assert str(caught.value) == f"no backup-sidecar daemon listening on {socket_path}"
    assert not is_daemon_running(socket_path)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.ArchiveNotFoundError("x"), "not_found"),
        (errors.BusyError("user"), "busy"),
        (errors.RestoreRefusedError("no"), "refused"),
        (errors.CorruptArchiveError("x", "bad crc"), "corrupt"),
        (errors.UsageError("bad flag"), "bad_request"),
        (errors.UnknownDatabaseError("cats"), "bad_request"),
        (errors.InvalidArchiveNameError("/x"), "bad_request"),
        (ProtocolError("bad json"), "bad_request"),
        (errors.OperationAbortedError("backup"), "failed"),
        (errors.SidecarError("disk on fire"), "failed"),
        (KeyError("oops"), "failed"),
    ],
)
def test_error_codes(exc: BaseException, code: str) -> None:
    """Each errors.py exception maps to its protocol code; anything else is ``failed``."""
    assert error_code(exc) == code


@given(st.binary(max_size=300))
def test_decoding_arbitrary_bytes_never_crashes(line: bytes) -> None:
    """Any request line either parses or raises ProtocolError, never anything else."""
    with contextlib.suppress(ProtocolError):
        decode_request(line)


@given(
    st.fixed_dictionaries(
        {"op": st.sampled_from(["backup", "prune", "restore", "verify", "list"])},
        optional={
            "archive": st.one_of(st.text(max_size=20), st.integers()),
            "databases": st.one_of(st.none(), st.lists(st.text(max_size=5)), st.text()),
            "confirm": st.one_of(st.booleans(), st.integers(), st.text(max_size=3)),
            "keep": st.one_of(st.none(), st.integers(), st.floats()),
            "policy": st.one_of(st.none(), st.text(max_size=5)),
        },
    )
)
def test_decoding_arbitrary_objects_never_crashes(obj: dict[str, Any]) -> None:
    """Wrong types and values in any field are ProtocolError (bad_request), never a crash."""
    import json

    with contextlib.suppress(ProtocolError):
        decode_request(json.dumps(obj).encode())


@pytest.mark.parametrize(
    ("line", "op"),
    [
        (b'{"op":"prune","keep":' + b"9" * 5000 + b',"dry_run":true}', None),
        (b'{"op":"list","x":[[' + b"1" * 4400 + b"]]}", None),
        (b'{"op":"prune","keep":-' + b"9" * 4301 + b"}", None),
        (b"9" * 10_000, None),
    ],
    ids=["keep-5000-digits", "nested-4400-digits", "negative", "bare"],
)
def test_integers_past_the_digit_limit_are_protocol_errors(line: bytes, op: str | None) -> None:
    """Outside attack 1, item 8: an integer longer than Python's int digit limit made
    json.loads raise a plain ValueError that escaped decode_request and killed the connection
    thread; it is a ProtocolError (``bad_request``) naming the limit, with no op label."""
    with pytest.raises(ProtocolError, match="digits") as refused:
        decode_request(line)
    assert refused.value.op is op


def test_an_incomplete_restore_error_carries_what_was_restored() -> None:
    """A restore that wrote arrow and then failed is answered with its error object naming what
    was restored and the pre_restore archive that undoes it; the reply decodes on the client
    side, and any other error keeps just code and message."""
    from pathlib import Path

    from backup_sidecar import errors
    from backup_sidecar.control import encode, error_body
    from backup_sidecar.control.protocol import ErrorResponse, decode_reply

    exc = errors.RestoreIncompleteError(
        restored=["arrow"],
        reason="database 'user': disk I/O error",
        pre_restore_archive="pre_restore_20260101_000000",
        rescue=None,
    )
    body = error_body(exc)
    assert body.model_dump() == {
        "code": "failed",
        "message": str(exc),
        "restored": ["arrow"],
        "pre_restore_archive": "pre_restore_20260101_000000",
    }
    assert "to undo, restore pre_restore_20260101_000000" in body.message
    reply = decode_reply(encode(ErrorResponse(error=body)))
    assert isinstance(reply, ErrorResponse) and reply.error.restored == ["arrow"]
    plain = error_body(errors.DatabaseLockedError("user", Path("/x/user.db"), 2.0))
    assert set(plain.model_dump()) == {"code", "message"}


@contextlib.contextmanager
def daemon_answering(path: Path, reply: bytes) -> Iterator[None]:
    """A fake daemon on ``path`` that reads one request line and answers ``reply``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as stream:
            stream.readline()
            conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(WAIT_S)
        listener.close()


@pytest.mark.parametrize(
    ("request_", "reply", "fault"),
    [
        ({"op": "backup"}, b'{"ok":true,"result":{"archive":1}}\n', "bad backup result: archive"),
        (
            {"op": "ping"},
            b'{"ok":true,"result":{"pong":true,"pid":"12","version":"1"}}\n',
            "bad ping result: pid",
        ),
        (
            {"op": "list"},
            b'{"ok":true,"result":{"archives":[{"name":"a"}]}}\n',
            "bad list result: archives.0.path",
        ),
        (
            {"op": "status"},
            b'{"ok":true,"result":{"pong":true,"pid":12,"version":"1"}}\n',
            "bad status result: healthy: Field required",
        ),
    ],
)
def test_a_malformed_result_is_one_connection_error(
    socket_path: Path, request_: dict[str, Any], reply: bytes, fault: str
) -> None:
    """A daemon's answer that is not its op's result model is one DaemonConnectionError naming
    the op and the field at fault (never a pydantic traceback or a half-read result)."""
    with daemon_answering(socket_path, reply), pytest.raises(DaemonConnectionError) as caught:
        ControlClient(socket_path, timeout_s=WAIT_S).call(request_)
    assert f"malformed reply: {fault}" in str(caught.value)
    assert str(socket_path) in str(caught.value)


def test_ctl_reports_a_malformed_result_in_one_line(socket_path: Path) -> None:
    """`ctl backup` against a daemon answering a malformed result prints one error line naming
    the socket and the fault and exits 1; nothing is printed as if it were the result."""
    reply = b'{"ok":true,"result":{"archive":"manual_1","size_bytes":"big","databases":[]}}\n'
    with daemon_answering(socket_path, reply):
        ctl = ["ctl", "--socket", str(socket_path), "--timeout", str(WAIT_S)]
        done = subprocess.run(
            [sys.executable, "-m", "backup_sidecar", *ctl, "backup"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1, done
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"backup-sidecar: error: control socket {socket_path}: malformed reply: "
        "bad backup result: size_bytes: Input should be a valid integer"
    ]
