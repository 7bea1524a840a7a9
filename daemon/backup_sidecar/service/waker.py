"""Waking the daemon's main loop from any thread or from a signal handler."""

from __future__ import annotations

import contextlib
import os
import select


class Waker:
    """Wakes the main loop from any thread or from a signal handler, through a pipe.

    Not a threading.Event: its set() takes a lock, and CPython runs a signal handler in the main
    thread between two bytecodes, possibly while that thread holds the same lock in wait() or
    clear(). The handler then waits for the lock forever. That was seen as a daemon that ignored
    SIGHUP and SIGTERM while its next scheduled backup hung in the same set(). A write to a
    non-blocking pipe takes no lock; a full pipe already holds a wake-up.
    """

    def __init__(self) -> None:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._r = os.fdopen(r, "rb", buffering=0)
        self._w = os.fdopen(w, "wb", buffering=0)

    def set(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self._w.write(b"\0")

    def wait(self, timeout: float) -> None:
        """Return after a set() (earlier ones included) or ``timeout`` seconds."""
        select.select([self._r], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while self._r.read(4096):
                pass
