"""A download that gives up when told to, however stalled the endpoint.

A GET from an endpoint that drips bytes or goes silent blocks inside obstore until the request
timeout (60 s), and a retry waits its backoff on top: longer than a container runtime waits
after SIGTERM. So, when the caller can cancel, the stream is opened and read by a thread of
its own (one thread: obstore's objects stay on it) that hands chunks over a small queue, and
the caller waits on that queue in short steps, asking ``cancel()`` between them. Once it is
true the caller raises OffsiteDownloadAbandonedError at once; the thread is a daemon thread
left to end with its request (its chunks go nowhere).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import cast

from backup_sidecar.errors import OffsiteDownloadAbandonedError

#: How often a waiting caller asks ``cancel()`` (seconds).
POLL_S = 0.1
_DEPTH = 2  # chunks read ahead (1 MiB each)
_END = object()
Chunk = bytes | memoryview


def abandonable(
    open_chunks: Callable[[], Iterable[Chunk]],
    cancel: Callable[[], bool] | None,
    *,
    url: str,
    name: str,
) -> Iterator[Chunk]:
    """The chunks ``open_chunks()`` gives; its errors (and a read's) raised here as they are.
    Without ``cancel``, read directly. With it, opened before this returns (so a refusal is
    raised here, as without), then OffsiteDownloadAbandonedError as soon as ``cancel()``."""
    if cancel is None:
        return iter(open_chunks())
    return _Pulled(open_chunks, cancel, url=url, name=name).chunks()


def sleep_unless(
    sleep: Callable[[float], None], cancel: Callable[[], bool] | None, *, url: str, name: str
) -> Callable[[float], None]:
    """``sleep`` (a retry's backoff) in steps, OffsiteDownloadAbandonedError once ``cancel()``."""
    if cancel is None:
        return sleep

    def stepped(seconds: float) -> None:
        left = seconds
        while left > 0:
            if cancel():
                raise OffsiteDownloadAbandonedError(url, name)
            sleep(min(left, POLL_S))
            left -= POLL_S

    return stepped


class _Pulled:
    def __init__(
        self,
        open_chunks: Callable[[], Iterable[Chunk]],
        cancel: Callable[[], bool],
        *,
        url: str,
        name: str,
    ) -> None:
        self._cancel = cancel
        self._url = url
        self._name = name
        self._queue: queue.Queue[object] = queue.Queue(maxsize=_DEPTH)
        self._stop = threading.Event()
        thread = threading.Thread(
            target=self._pull, args=(open_chunks,), name=f"download {name}", daemon=True
        )
        thread.start()
        opened = self._next()  # the open's own error, raised here
        assert opened is _END

    def _pull(self, open_chunks: Callable[[], Iterable[Chunk]]) -> None:
        try:
            chunks = open_chunks()
            self._hand(_END)
            for chunk in chunks:
                if not self._hand(chunk):
                    return
            self._hand(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
            self._hand(exc)

    def _hand(self, item: object) -> bool:
        """Queue ``item`` for the caller; False once the caller gave up."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=POLL_S)
            except queue.Full:
                continue
            return True
        return False

    def _next(self) -> object:
        while True:
            if self._cancel():
                self._stop.set()
                raise OffsiteDownloadAbandonedError(self._url, self._name)
            try:
                item = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                self._stop.set()
                raise item
            return item

    def chunks(self) -> Iterator[Chunk]:
        try:
            while (item := self._next()) is not _END:
                yield cast("Chunk", item)
        finally:
            self._stop.set()
