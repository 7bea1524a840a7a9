"""One measured step of the end-to-end offsite benchmark, in a process of its own
(bench/offsite_e2e.py runs it through bench/proc.py for the peak RSS):
``python -m bench.offsite_e2e_worker OP CONFIG_YAML [ARCHIVE_NAME]``.

It prints one JSON line: each step's seconds (after the imports and the configuration load),
its CPU seconds (the whole process's, all threads, over the step alone) and peak RSS. OPs,
each the daemon's own code on the sidecar configuration ``CONFIG_YAML``:

- ``backup-sync`` (what the daemon does after a backup, in one process with one read-check
  cache, as service/core.py wires them): ``jobs.run_backup`` of policy ``manual`` into
  ``ARCHIVE_NAME`` with the daemon's ``ReadCheckCache`` (locks, snapshot, check, archive, and
  the read-back of the new archive into that cache), then one pass of the daemon's upload job
  (``service.offsite.OffsiteUploader.sync``: lease, listing the bucket, ``Store.upload`` of
  every pending archive, confirm) sharing the cache. Reported as ``backup`` and ``sync``; the
  pass's peak RSS is its own (the high-water mark is reset after the backup). ``sync`` also
  says how long ``Store.upload`` itself took (timed by a wrapper; the Store is not changed)
  and how many archives the pass confirmed (the benchmark requires exactly one).
- ``backup`` / ``sync``: either step alone in a process of its own (a cold cache: the pass
  reads the archive itself, as after a daemon restart).
"""

from __future__ import annotations

import json
import os
import resource
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


def cpu_s() -> float:
    """CPU seconds of this process so far, all its threads."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def reset_peak_rss() -> None:
    """Start a new peak RSS (``VmHWM``) from the current RSS (Linux ``clear_refs`` 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no VmHWM in /proc/self/status")


def measured(step: Any) -> dict[str, Any]:
    """``step()``'s result with its seconds, CPU seconds and peak RSS."""
    reset_peak_rss()
    cpu, started = cpu_s(), time.monotonic()
    out = step()
    seconds, cpu = time.monotonic() - started, cpu_s() - cpu
    return {**out, "seconds": seconds, "cpu_s": cpu, "maxrss_mib": peak_rss_mib()}


def backup(config: Path, name: str, checks: Any = None) -> dict[str, Any]:
    from backup_sidecar import jobs

    conf = configured(config)

    def run() -> dict[str, Any]:
        info = jobs.run_backup(
            conf.runtime, policy="manual", names=None, archive_name=name, checks=checks
        )
        return {"archive_bytes": info.path.stat().st_size}

    return measured(run)


def sync(config: Path, checks: Any = None) -> dict[str, Any]:
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
        read_checks=checks,
    )
    result = measured(lambda: {"confirmed": uploader.sync()})
    failures = sum(
        s.value for m in registry.collect() for s in m.samples if "offsite_failures" in s.name
    )
    return {
        **result,
        "upload_seconds": sum(uploads),
        "failures": failures,
        "bytes": registry.get_sample_value("backup_sidecar_offsite_upload_bytes_total") or 0,
    }


def main() -> None:
    op, config = sys.argv[1], Path(sys.argv[2])
    if op == "backup-sync":
        from backup_sidecar import archiver

        checks = archiver.ReadCheckCache()  # the daemon's, shared by its jobs
        result = {"backup": backup(config, sys.argv[3], checks), "sync": sync(config, checks)}
    elif op == "backup":
        result = backup(config, sys.argv[3])
    elif op == "sync":
        result = sync(config)
    else:
        raise SystemExit(f"unknown operation {op!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
