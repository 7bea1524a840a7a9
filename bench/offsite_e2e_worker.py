"""One measured step of the end-to-end offsite benchmark, in a process of its own
(bench/offsite_e2e.py runs it through bench/proc.py for the peak RSS):
``python -m bench.offsite_e2e_worker OP CONFIG_YAML [ARCHIVE_NAME]``.

It prints one JSON line: the step's seconds, after the imports and the configuration load.
OPs, each the daemon's own code on the sidecar configuration ``CONFIG_YAML``:

- ``backup``: ``jobs.run_backup`` (what a scheduled backup runs: locks, snapshot, check,
  archive, verify) of policy ``manual`` into ``ARCHIVE_NAME``;
- ``sync``: one pass of the daemon's upload job (``service.offsite.OffsiteUploader.sync``:
  lease, listing the bucket, ``Store.upload`` of every pending archive, confirm). It also says
  how long ``Store.upload`` itself took (timed by a wrapper; the Store is not changed) and how
  many archives the pass confirmed (the benchmark requires exactly one).
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def configured(config: Path) -> Any:
    from backup_sidecar.service.live import Configured
    from backup_sidecar.settings import load_settings, resolve_paths

    settings = load_settings(config, environ=os.environ)
    return Configured.of(settings, resolve_paths(settings, environ=os.environ, cwd=config.parent))


def backup(config: Path, name: str) -> dict[str, Any]:
    from backup_sidecar import jobs

    conf = configured(config)
    started = time.monotonic()
    info = jobs.run_backup(conf.runtime, policy="manual", names=None, archive_name=name)
    seconds = time.monotonic() - started
    return {"seconds": seconds, "archive_bytes": info.path.stat().st_size}


def sync(config: Path) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry

    from backup_sidecar import archiver, offsite
    from backup_sidecar.service.live import LiveConfig
    from backup_sidecar.service.metric_families import MetricFamilies
    from backup_sidecar.service.offsite import OffsiteUploader

    conf = configured(config)
    uploads: list[float] = []
    real_upload = offsite.Store.upload

    def timed_upload(self: offsite.Store, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        try:
            return real_upload(self, *args, **kwargs)
        finally:
            uploads.append(time.monotonic() - started)

    offsite.Store.upload = timed_upload  # type: ignore[method-assign]
    registry = CollectorRegistry()
    uploader = OffsiteUploader(
        live=LiveConfig(conf),
        families=MetricFamilies(registry, version="bench", clock=lambda: datetime.now(UTC)),
        catalog=archiver.Catalog(conf.runtime.backup_dir),
        environ=os.environ,
    )
    started = time.monotonic()
    confirmed = uploader.sync()
    seconds = time.monotonic() - started
    failures = sum(
        s.value for m in registry.collect() for s in m.samples if "offsite_failures" in s.name
    )
    return {
        "seconds": seconds,
        "upload_seconds": sum(uploads),
        "confirmed": confirmed,
        "failures": failures,
        "bytes": registry.get_sample_value("backup_sidecar_offsite_upload_bytes_total") or 0,
    }


def main() -> None:
    op, config = sys.argv[1], Path(sys.argv[2])
    if op == "backup":
        result = backup(config, sys.argv[3])
    elif op == "sync":
        result = sync(config)
    else:
        raise SystemExit(f"unknown operation {op!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
