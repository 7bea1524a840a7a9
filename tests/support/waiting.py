"""Waiting without sleeping to synchronise: poll a condition, or a daemon's log, to a deadline."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

#: Default deadline for anything that should happen "soon".
DEADLINE_S = 30.0


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
    """A process's JSON log (its stderr), parsed line by line in a background thread."""

    def __init__(self, stream: Iterable[str]) -> None:
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Iterable[str]) -> None:
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
