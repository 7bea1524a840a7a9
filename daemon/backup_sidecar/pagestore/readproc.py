"""The page read in a child process, for a process that also opens the database with sqlite3.

``reader.read_pages`` uses a second SQLite library (sqlean) in the calling process; closing its
descriptor of the database drops every POSIX lock the process holds on that file, also those
of the stdlib ``sqlite3`` connections (https://sqlite.org/howtocorrupt.html, 2.2.1). Run in a
child, the read keeps SQLite's own locking intact: the child holds the one read transaction
and streams ``{"page_size", "page_count", "header"}`` as a JSON line, then the raw pages, to
its stdout; the pipe's back-pressure keeps the transaction open until the parent has read
every page. Errors come back as the child's one-line stderr, raised as PageReadError.

    python -m backup_sidecar.pagestore.readproc DB BUSY_TIMEOUT_S [CHECK]

With a CHECK (``quick`` or ``full``), the child runs it in its read transaction first and the
JSON line also carries ``facts`` (``checking``).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from backup_sidecar.errors import PageReadError
from backup_sidecar.pagestore.header import DbHeader
from backup_sidecar.pagestore.reader import ImageInfo, read_pages

_FAILED = 3


@contextlib.contextmanager
def read_pages_in_child(
    db: Path, *, busy_timeout_s: float = 30.0, check: str | None = None
) -> Iterator[tuple[ImageInfo, Iterator[bytes]]]:
    """Like ``reader.read_pages``, the reading done by a child process."""
    cmd = [
        sys.executable,
        "-m",
        __name__,
        str(db),
        str(busy_timeout_s),
        *([check] if check else []),
    ]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = proc.stdout.readline(1 << 16)
        if not line.endswith(b"\n"):
            raise PageReadError(db, _why(proc))
        try:
            doc = json.loads(line)
            header = DbHeader.from_json(doc["header"])
            facts = doc.get("facts")
            if not isinstance(facts, dict | None):
                raise TypeError("facts")
            info = ImageInfo(doc["page_size"], doc["page_count"], header, facts)
        except (ValueError, KeyError, TypeError) as exc:
            raise PageReadError(db, f"the reader process sent {line[:80]!r}") from exc
        yield info, _pages(proc, proc.stdout, info, db)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _pages(
    proc: subprocess.Popen[bytes], out: IO[bytes], info: ImageInfo, db: Path
) -> Iterator[bytes]:
    for pgno in range(1, info.page_count + 1):
        page = out.read(info.page_size)
        if len(page) != info.page_size:
            raise PageReadError(db, f"page {pgno}: {_why(proc)}")
        yield page
    if out.read(1) or proc.wait() != 0:
        raise PageReadError(db, _why(proc))


def _why(proc: subprocess.Popen[bytes]) -> str:
    """The child's one-line reason (its stderr), once it has exited."""
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    lines = err.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"the reader process exited with {proc.returncode}"


def main() -> None:
    db, busy = Path(sys.argv[1]), float(sys.argv[2])
    check = sys.argv[3] if len(sys.argv) > 3 else None
    out = sys.stdout.buffer
    try:
        with read_pages(db, busy_timeout_s=busy, check=check) as (info, pages):
            head = {
                "page_size": info.page_size,
                "page_count": info.page_count,
                "header": info.header.to_json(),
                "facts": info.facts,
            }
            out.write(json.dumps(head).encode() + b"\n")
            for page in pages:
                out.write(page)
            out.flush()
    except PageReadError as exc:
        print(exc.reason, file=sys.stderr)
        sys.exit(_FAILED)
    except BrokenPipeError:  # the parent stopped reading (it failed or was interrupted)
        sys.exit(_FAILED)


if __name__ == "__main__":
    main()
