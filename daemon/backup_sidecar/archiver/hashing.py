"""SHA-256 on the other core: hashing runs in a thread fed by the reading loop.

hashlib releases the GIL for large buffers, so while the calling thread decompresses and
writes the next chunk, the previous one is hashed in parallel. The queue is bounded, so memory
stays at a few chunks whatever the file size.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from types import TracebackType

_QUEUE_CHUNKS = 8


class BackgroundSha256:
    """``with BackgroundSha256() as h: h.update(chunk)...`` then ``h.hexdigest()``."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUE_CHUNKS)
        self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        self._result: str | None = None

    def __enter__(self) -> BackgroundSha256:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish()

    def update(self, chunk: bytes) -> None:
        self._chunks.put(chunk)

    def hexdigest(self) -> str:
        self._finish()
        assert self._result is not None
        return self._result

    def _finish(self) -> None:
        if self._result is None:
            self._chunks.put(None)
            self._thread.join()
            self._result = self._digest.hexdigest()

    def _run(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            self._digest.update(chunk)
