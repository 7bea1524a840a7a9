"""A sidecar's uploader in a process of its own, for the kill -9 tests.

``python upload_child.py SPEC_JSON`` uploads ``archive`` to ``url`` (``endpoint`` for s3; the
AWS variables come from the environment). Once ``stall_after`` bytes went into the store's
stream it prints ``stalled`` and blocks, so the test kills it mid-upload at a known point
rather than racing a fast loopback upload.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from backup_sidecar.offsite import Store, parse_target, resolve_credentials
from backup_sidecar.offsite import store as store_module


def main() -> None:
    spec = json.loads(sys.argv[1])
    real = store_module.file_chunks

    def stalling(f: BinaryIO) -> Iterator[bytes]:
        sent = 0
        for chunk in real(f):
            yield chunk
            sent += len(chunk)
            if sent >= spec["stall_after"]:
                print("stalled", flush=True)
                threading.Event().wait()

    store_module.file_chunks = stalling  # type: ignore[assignment]
    target = parse_target(
        spec["url"], endpoint=spec.get("endpoint"), region="us-east-1", path_style=True
    )
    credentials = resolve_credentials(os.environ) if target.scheme == "s3" else None
    store = Store(target, credentials=credentials, part_size=spec["part_size"], max_concurrency=2)
    store.upload(Path(spec["archive"]))
    print("uploaded", flush=True)


if __name__ == "__main__":
    main()
