"""What the offsite uploader last learned, for the control socket's ``offsite_status``.

The upload thread records each pass's lease verdict, pending count, each policy's newest
confirmed copy and the pass's failure; a control request reads one consistent snapshot under
the lock. Nothing here touches the store: the answer never waits on a slow endpoint.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class NewestCopy:
    """A policy's newest confirmed offsite copy: the object and when the store took it."""

    object: str
    uploaded_at: float


@dataclass(frozen=True)
class UploaderSnapshot:
    """One pass's view (None: not known yet)."""

    url: str | None = None
    writable: bool | None = None
    holder: str | None = None
    pending: int | None = None
    newest: dict[str, NewestCopy] = field(default_factory=dict)
    last_error: str | None = None
    last_error_at: float | None = None
    checked_at: float | None = None
    #: Each local archive the uploader keeps offsite -> (``confirmed``, ``pending`` or
    #: ``mismatched``, the object's name): the web page's offsite column.
    copies: dict[str, tuple[str, str]] = field(default_factory=dict)


def _iso(moment: float | None) -> str | None:
    return None if moment is None else datetime.fromtimestamp(moment, UTC).isoformat()


class UploaderState:
    """The uploader's recorded state, written by its thread, read by control requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._now = UploaderSnapshot()
        self._mismatched: dict[str, str] = {}  # this pass's, until its listing is recorded

    def reset(self, url: str) -> None:
        """A new store (start, or a changed section): nothing known of it yet."""
        with self._lock:
            self._now = UploaderSnapshot(url=url)

    def verdict(self, *, writable: bool, holder: str | None) -> None:
        with self._lock:
            self._now = replace(self._now, writable=writable, holder=holder)

    def pending(self, count: int) -> None:
        with self._lock:
            self._now = replace(self._now, pending=count)

    def confirmed(self, policy: str, obj: str, moment: float) -> None:
        """``obj`` of ``policy`` is confirmed offsite since ``moment`` (kept if the newest)."""
        with self._lock:
            known = self._now.newest.get(policy)
            if known is None or moment > known.uploaded_at:
                newest = {**self._now.newest, policy: NewestCopy(obj, moment)}
                self._now = replace(self._now, newest=newest)

    def mismatched(self, found: Mapping[str, str]) -> None:
        """This pass found these local archives' names taken by objects of other bytes."""
        with self._lock:
            self._mismatched = dict(found)

    def listed(self, confirmed: Mapping[str, str], waiting: Iterable[str]) -> None:
        """A listing's verdict per archive: ``confirmed`` archive -> object, the others
        ``waiting`` (pending, or mismatched as said just before)."""
        with self._lock:
            copies = {name: ("confirmed", obj) for name, obj in confirmed.items()}
            for name in waiting:
                obj = self._mismatched.get(name)
                copies[name] = ("mismatched", obj) if obj else ("pending", "")
            self._mismatched = {}
            self._now = replace(self._now, copies=copies)

    def unanswered(self, waiting: Iterable[str]) -> None:
        """The store did not answer: these archives are (still) not offsite."""
        with self._lock:
            copies = dict(self._now.copies)
            for name in waiting:
                if copies.get(name, ("", ""))[0] != "mismatched":
                    copies[name] = ("pending", "")
            self._now = replace(self._now, copies=copies)

    def uploaded(self, archive: str, obj: str) -> None:
        with self._lock:
            self._now = replace(self._now, copies={**self._now.copies, archive: ("confirmed", obj)})

    def passed(self, moment: float) -> None:
        """A pass ended without a failure: the last error clears."""
        with self._lock:
            self._now = replace(self._now, last_error=None, last_error_at=None, checked_at=moment)

    def failed(self, error: str, moment: float) -> None:
        with self._lock:
            self._now = replace(
                self._now, last_error=error, last_error_at=moment, checked_at=moment
            )

    def snapshot(self) -> UploaderSnapshot:
        with self._lock:
            return self._now

    def as_json(self, *, configured: bool, url: str | None, now: float) -> dict[str, Any]:
        """The ``offsite_status`` result (control/results.py OffsiteStatusResult)."""
        s = self.snapshot()
        if not configured:
            s = UploaderSnapshot()
        elif s.url != url:  # reloaded to another store, not yet passed over
            s = UploaderSnapshot(url=url)
        return {
            "configured": configured,
            "url": s.url,
            "writable": s.writable,
            "holder": s.holder,
            "pending": s.pending,
            "newest": {
                policy: {
                    "object": copy.object,
                    "uploaded_at": _iso(copy.uploaded_at),
                    "age_seconds": round(max(0.0, now - copy.uploaded_at), 3),
                }
                for policy, copy in sorted(s.newest.items())
            },
            "last_error": s.last_error,
            "last_error_at": _iso(s.last_error_at),
            "checked_at": _iso(s.checked_at),
            "copies": {
                name: {"state": state, "object": obj or None}
                for name, (state, obj) in sorted(s.copies.items())
            },
        }
