"""age encryption as streams with bounded memory (pyrage's ``encrypt_io``/``decrypt_io``).

Recipients are public keys (``age1...``): a sidecar holding only them can upload but never read.
The identity file (``AGE-SECRET-KEY-1...`` lines, ``#`` comments) is needed only to download.
``encrypt_io`` pushes into a writer, the object store pulls from an iterator: a thread and a
queue of at most ``_QUEUE_DEPTH`` chunks join the two, so memory never grows with the file.
"""

from __future__ import annotations

import contextlib
import os
import queue
import stat
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol

import pyrage
from pyrage import x25519

from backup_sidecar.errors import OffsiteKeyError

_QUEUE_DEPTH = 4
_IDENTITY_MAX_BYTES = 64 * 1024


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def parse_recipients(keys: Sequence[str]) -> tuple[x25519.Recipient, ...]:
    """age public keys; a bad one is refused naming its position (keys are not secret)."""
    if not keys:
        raise OffsiteKeyError("recipients", "at least one age recipient (age1...) is needed")
    out = []
    for i, key in enumerate(keys):
        try:
            out.append(x25519.Recipient.from_str(key.strip()))
        except pyrage.RecipientError as exc:
            raise OffsiteKeyError(f"recipient #{i + 1} ({key[:12]}...)", str(exc)) from None
    return tuple(out)


def load_identities(path: Path) -> tuple[x25519.Identity, ...]:
    """The identities of an age identity file; never echoes a line of it in an error."""
    try:
        # Non-blocking open: a FIFO at the path is refused at once, never waited on.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise OffsiteKeyError(str(path), f"cannot read the identity file: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OffsiteKeyError(str(path), "cannot read the identity file: not a regular file")
    with os.fdopen(fd, "rb") as f:
        try:
            raw = f.read(_IDENTITY_MAX_BYTES + 1)
        except OSError as exc:
            raise OffsiteKeyError(
                str(path), f"cannot read the identity file: {exc.strerror}"
            ) from None
    if len(raw) > _IDENTITY_MAX_BYTES:
        raise OffsiteKeyError(str(path), "too large for an identity file")
    try:
        lines = raw.decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise OffsiteKeyError(str(path), "not an age identity file (not ASCII)") from None
    found = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            found.append(x25519.Identity.from_str(text))
        except pyrage.IdentityError:
            raise OffsiteKeyError(str(path), f"line {number} is not an age identity") from None
    if not found:
        raise OffsiteKeyError(str(path), "no AGE-SECRET-KEY-1... line in the file")
    return tuple(found)


class EncryptedChunks:
    """Iterate the age ciphertext of ``source`` in chunks while a thread encrypts it.

    Use as a context manager: leaving it early (the upload failed) stops the thread."""

    def __init__(self, source: BinaryIO, recipients: Sequence[x25519.Recipient]) -> None:
        self._source = source
        self._recipients = list(recipients)
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(_QUEUE_DEPTH)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="age-encrypt", daemon=True)

    def __enter__(self) -> EncryptedChunks:
        self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):  # unblock a producer on a full queue
                self._queue.get(timeout=0.05)
        self._thread.join()

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _run(self) -> None:
        try:
            pyrage.encrypt_io(self._source, _QueueWriter(self._queue, self._stop), self._recipients)
        except _StoppedError:
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self._put(exc)
            return
        self._put(None)

    def _put(self, item: bytes | BaseException | None) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
            except queue.Full:
                continue
            return


class _StoppedError(Exception):
    """The consumer went away: the encrypting thread ends quietly."""


class _QueueWriter:
    def __init__(self, q: queue.Queue[bytes | BaseException | None], stop: threading.Event):
        self._queue = q
        self._stop = stop

    def write(self, data: bytes) -> int:
        chunk = bytes(data)
        while True:
            if self._stop.is_set():
                raise _StoppedError
            try:
                self._queue.put(chunk, timeout=0.05)
            except queue.Full:
                continue
            return len(chunk)

    def flush(self) -> None:
        return None


def decrypt_stream(
    source: Readable, target: BinaryIO, identities: Sequence[x25519.Identity]
) -> None:
    """Decrypt ``source`` into ``target``; raises pyrage.DecryptError (wrong identity) or
    OSError (ciphertext cut or altered). The caller discards ``target`` on any error."""
    pyrage.decrypt_io(source, target, list(identities))
