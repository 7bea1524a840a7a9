"""The operations running now, counted so that shutdown can wait for them."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator


class InFlight:
    """Scheduled runs and control requests in progress."""

    def __init__(self) -> None:
        self._busy = threading.Condition()
        self.count = 0

    @contextlib.contextmanager
    def track(self, what: str) -> Iterator[None]:
        with self._busy:
            self.count += 1
        try:
            yield
        finally:
            with self._busy:
                self.count -= 1
                self._busy.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing runs; False if something still does after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._busy:
            while self.count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._busy.wait(left)
        return True
