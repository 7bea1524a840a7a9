"""`ctl ping`'s own reader (cli/ping.py reads the control socket line by line without
socket.py, which costs the fast command 2 ms): against a real Unix socket, a reply split over
many writes, after a progress event, is read whole; a reply cut short, one past the size
limit and a closed connection are each one clear error."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from backup_sidecar.cli import ping as ping_module
from backup_sidecar.cli.ping import ping
from backup_sidecar.errors import DaemonConnectionError

ANSWER = b'{"ok": true, "result": {"pong": true, "pid": 7, "version": "1.0"}}\n'


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Path, list[list[bytes]]]]:
    """A Unix socket that answers each connection with the next list of writes, then closes."""
    path = tmp_path / "c.sock"
    replies: list[list[bytes]] = []
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):  # the client may have given up
                conn.recv(1024)
                for part in replies.pop(0):
                    conn.sendall(part)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, replies
    listener.close()


def test_a_reply_in_pieces_after_a_progress_event_is_read_whole(
    server: tuple[Path, list[list[bytes]]],
) -> None:
    """Byte-by-byte writes and a progress line first: the answer is the one reply line."""
    path, replies = server
    progress = b'{"event": "progress", "done": 1}\n'
    replies.append([progress[:5], progress[5:] + ANSWER[:3], *(bytes([b]) for b in ANSWER[3:])])
    assert ping(path, timeout_s=5) == {"pong": True, "pid": 7, "version": "1.0"}


@pytest.mark.parametrize(
    ("writes", "message"),
    [
        ([ANSWER[:-1]], "connection closed mid-reply"),
        ([], "the daemon closed the connection unanswered"),
        ([b"x" * 70_000, b"y" * 70_000], "connection closed mid-reply"),
    ],
    ids=["cut short", "closed", "over the limit"],
)
def test_a_bad_reply_is_one_clear_error(
    server: tuple[Path, list[list[bytes]]],
    writes: list[bytes],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reply without its line feed, none at all, or one longer than the limit (lowered to
    100 kB here) is a DaemonConnectionError saying which."""
    monkeypatch.setattr(ping_module, "_MAX_REPLY_BYTES", 100_000)
    path, replies = server
    replies.append(writes)
    with pytest.raises(DaemonConnectionError, match=message):
        ping(path, timeout_s=5)
