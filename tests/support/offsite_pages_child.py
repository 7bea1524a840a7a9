"""The daemon's upload pass in a process of its own, for the kill -9 test of page uploads.

``python offsite_pages_child.py CONFIG STALL_AT``: one upload pass of the sidecar configured
by CONFIG (credentials from the environment). The STALL_AT-th pack object it sends (1-based)
stops after its first chunk went into the store's stream: the child prints ``stalled`` and
blocks, so the test kills it mid-pack at a known point. Without a stall it prints ``done N``.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry

from backup_sidecar import archiver
from backup_sidecar.offsite import store as store_module
from backup_sidecar.offsite import transfer
from backup_sidecar.service.live import Configured, LiveConfig
from backup_sidecar.service.metric_families import MetricFamilies
from backup_sidecar.service.offsite import OffsiteUploader
from backup_sidecar.settings import load_settings, resolve_paths


def main() -> None:
    config, stall_at = Path(sys.argv[1]), int(sys.argv[2])
    real = transfer.until
    packs = 0

    def stalling(
        chunks: Iterable[bytes], cancel: Callable[[], bool] | None, url: str, name: str
    ) -> Iterator[bytes]:
        nonlocal packs
        if "/packs/" in name:
            packs += 1
        stall = "/packs/" in name and packs == stall_at
        for chunk in real(chunks, cancel, url, name):
            yield chunk
            if stall:
                print("stalled", flush=True)
                threading.Event().wait()

    store_module.until = stalling  # type: ignore[attr-defined]  # store calls the name it imported
    environ = dict(os.environ)
    settings = load_settings(config, environ=environ)
    configured = Configured.of(
        settings, resolve_paths(settings, environ=environ, cwd=config.parent)
    )
    uploader = OffsiteUploader(
        live=LiveConfig(configured),
        families=MetricFamilies(
            CollectorRegistry(), version="test", clock=lambda: datetime.now(UTC)
        ),
        catalog=archiver.Catalog(configured.runtime.backup_dir),
        environ=environ,
    )
    print(f"done {uploader.sync()}", flush=True)


if __name__ == "__main__":
    main()
