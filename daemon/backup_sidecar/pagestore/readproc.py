"""The read transaction in a child process, for a process that also opens the database with
sqlite3.

``snapshot.snapshot`` uses a second SQLite library (sqlean) in the calling process; closing
its descriptor of the database drops every POSIX lock the process holds on that file, also
those of the stdlib ``sqlite3`` connections (https://sqlite.org/howtocorrupt.html, 2.2.1). Run
in a child, the read keeps SQLite's own locking intact. The child opens the one read
transaction, writes ``{"page_size", "page_count", "header"}`` as a JSON line to its stdout,
then answers the parent's requests on its stdin, one at a time, until the parent closes it
(the transaction stays open until then)::

    digests\\n               -> every page's SHA-256 (32 bytes each), then the image's
    check full|quick\\n      -> the check's facts as a JSON line (``checking``)
    pages N\\n + N u32 (LE)  -> those N pages, raw, in that order

so an unchanged database's pages never cross the pipe. Errors come back as the child's
one-line stderr (it exits), raised as PageReadError naming the database.

    python -c 'from backup_sidecar.pagestore.readproc import main; main()' DB BUSY_TIMEOUT_S
"""

from __future__ import annotations

import contextlib
import json
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from backup_sidecar.errors import PageReadError
from backup_sidecar.pagestore.header import DbHeader
from backup_sidecar.pagestore.reader import ImageInfo
from backup_sidecar.pagestore.snapshot import snapshot

_FAILED = 3
_MAIN = f"from {__name__} import main; main()"
_DIGEST = 32


class ChildSnapshot:
    """A ``snapshot.Snapshot`` whose read transaction a child process holds."""

    def __init__(self, proc: subprocess.Popen[bytes], db: Path, info: ImageInfo) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self._proc = proc
        self._in: IO[bytes] = proc.stdin
        self._out: IO[bytes] = proc.stdout
        self._db = db
        self.info = info
        #: The reader child's process id (it holds the read transaction).
        self.pid = proc.pid

    def digests(self) -> tuple[list[bytes], str]:
        self._send(b"digests\n")
        n = self.info.page_count
        raw = self._read((n + 1) * _DIGEST, "the page digests")
        return [raw[i : i + _DIGEST] for i in range(0, n * _DIGEST, _DIGEST)], raw[-_DIGEST:].hex()

    def check(self, check: str) -> dict[str, Any]:
        self._send(f"check {check}\n".encode())
        line = self._out.readline(1 << 24)
        if not line.endswith(b"\n"):
            raise PageReadError(self._db, _why(self._proc))
        try:
            facts = json.loads(line)
        except (ValueError, RecursionError):
            facts = None
        if not isinstance(facts, dict):
            raise PageReadError(self._db, f"the reader process sent {line[:80]!r}")
        return facts

    def pages(self, pgnos: Sequence[int]) -> Iterator[bytes]:
        self._send(f"pages {len(pgnos)}\n".encode() + struct.pack(f"<{len(pgnos)}I", *pgnos))
        for pgno in pgnos:
            yield self._read(self.info.page_size, f"page {pgno}")

    def _send(self, data: bytes) -> None:
        try:
            self._in.write(data)
            self._in.flush()
        except BrokenPipeError:
            raise PageReadError(self._db, _why(self._proc)) from None

    def _read(self, size: int, what: str) -> bytes:
        data = self._out.read(size)
        if len(data) != size:
            raise PageReadError(self._db, f"{what}: {_why(self._proc)}")
        return data


@contextlib.contextmanager
def snapshot_in_child(db: Path, *, busy_timeout_s: float = 30.0) -> Iterator[ChildSnapshot]:
    """Like ``snapshot.snapshot``, the read transaction held by a child process."""
    # Not ``-m``: the package imports this module first, so runpy would warn (on the stderr
    # that carries the child's reason) and run it twice.
    cmd = [sys.executable, "-c", _MAIN, str(db), str(busy_timeout_s)]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = proc.stdout.readline(1 << 16)
        if not line.endswith(b"\n"):
            raise PageReadError(db, _why(proc))
        try:
            doc = json.loads(line)
            info = ImageInfo(doc["page_size"], doc["page_count"], DbHeader.from_json(doc["header"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise PageReadError(db, f"the reader process sent {line[:80]!r}") from exc
        yield ChildSnapshot(proc, db, info)
        _end_requests(proc)
        if proc.stdout.read(1) or proc.wait(timeout=30) != 0:
            raise PageReadError(db, _why(proc))
    finally:
        if proc.poll() is None:
            proc.kill()
        _end_requests(proc)
        proc.communicate()


def _end_requests(proc: subprocess.Popen[bytes]) -> None:
    """Close the child's stdin (it then ends its transaction and exits)."""
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
        proc.stdin = None  # communicate() would flush it


def _why(proc: subprocess.Popen[bytes]) -> str:
    """The child's one-line reason (its stderr), once it has exited."""
    _end_requests(proc)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    if proc.returncode is not None and proc.returncode < 0:  # e.g. SIGBUS: the mapped file
        number = -proc.returncode
        name = signal.Signals(number).name if number in signal.valid_signals() else number
        return f"the reader process was killed by signal {name}"
    lines = err.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"the reader process exited with {proc.returncode}"


def _serve(db: Path, busy: float, requests: IO[bytes], out: IO[bytes]) -> None:
    # Memory-mapped reads (``reader.connect``): a SIGBUS ends this child, not the daemon.
    with snapshot(db, busy_timeout_s=busy, mmap=True) as snap:
        info = snap.info
        head = {
            "page_size": info.page_size,
            "page_count": info.page_count,
            "header": info.header.to_json(),
        }
        out.write(json.dumps(head).encode() + b"\n")
        out.flush()
        while line := requests.readline(256):
            op, _, arg = line.decode().strip().partition(" ")
            if op == "digests":
                digests, image = snap.digests()
                out.write(b"".join(digests) + bytes.fromhex(image))
            elif op == "check":
                out.write(json.dumps(snap.check(arg)).encode() + b"\n")
            elif op == "pages":
                n = int(arg)
                pgnos = struct.unpack(f"<{n}I", requests.read(4 * n))
                for page in snap.pages(pgnos):
                    out.write(page)
            else:
                raise PageReadError(db, f"the reader process was asked {line[:40]!r}")
            out.flush()


def main() -> None:
    db, busy = Path(sys.argv[1]), float(sys.argv[2])
    try:
        _serve(db, busy, sys.stdin.buffer, sys.stdout.buffer)
    except PageReadError as exc:
        print(exc.reason, file=sys.stderr)
        sys.exit(_FAILED)
    except (BrokenPipeError, struct.error, ValueError) as exc:  # the parent stopped or erred
        print(f"the reader process stopped: {exc}", file=sys.stderr)
        sys.exit(_FAILED)


if __name__ == "__main__":
    main()
