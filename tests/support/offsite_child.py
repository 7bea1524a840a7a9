"""A sidecar in a process of its own, for the kill -9 and two-sidecar tests.

``python offsite_child.py SPEC_JSON``: takes the lease on ``url`` (``endpoint`` for s3; the AWS
variables come from the environment) for ``lease_ttl`` seconds and prints ``holding``, then
uploads ``archive``. With ``stall_after``, once that many bytes went into the store's stream it
prints ``stalled`` and blocks, so the test kills it mid-upload at a known point rather than
racing a fast loopback upload. Otherwise it prints ``uploaded``, waits for a line on stdin,
releases the lease and prints ``released``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from backup_sidecar.offsite import Lease, Store, parse_target, resolve_credentials, transfer
from backup_sidecar.offsite import store as store_module


def say(word: str) -> None:
    print(word, flush=True)


def main() -> None:
    spec = json.loads(sys.argv[1])
    real = transfer.file_chunks
    stall_after = spec.get("stall_after")

    def stalling(f: transfer.Reader, size: int = transfer.CHUNK) -> Iterator[bytes]:
        sent = 0
        for chunk in real(f, size):
            yield chunk
            sent += len(chunk)
            if stall_after is not None and sent >= stall_after:
                say("stalled")
                threading.Event().wait()

    # store calls the name it imported: replace it there
    store_module.file_chunks = stalling  # type: ignore[attr-defined]
    target = parse_target(
        spec["url"], endpoint=spec.get("endpoint"), region="us-east-1", path_style=True
    )
    credentials = resolve_credentials(os.environ) if target.scheme == "s3" else None
    store = Store(target, credentials=credentials, part_size=spec["part_size"], max_concurrency=2)
    lease = Lease(store, ttl=spec["lease_ttl"])
    verdict = lease.acquire()
    if not verdict.writable:
        say(f"read-only: {verdict.message}")
        return
    say("holding")
    store.upload(Path(spec["archive"]), lease=lease)
    say("uploaded")
    sys.stdin.readline()
    lease.release()
    say("released")


if __name__ == "__main__":
    main()
