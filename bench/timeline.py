"""A timeline of one real `backup` (or `verify`) CLI run, in-process: when each archiver step
starts and ends, on which thread, plus the process's CPU. Wraps the steps, changes nothing.

    USER_DATABASE_PATH=... ARROW_DATABASE_PATH=... BACKUP_DIR=... \\
        python -m bench.timeline backup --user-db-only --name X
"""

from __future__ import annotations

import functools
import resource
import sys
import threading
import time
from typing import Any

T0 = time.monotonic()
EVENTS: list[str] = []


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _wrap(module: Any, name: str) -> None:
    fn = getattr(module, name)

    @functools.wraps(fn)
    def timed(*a: Any, **kw: Any) -> Any:
        start, cpu0 = time.monotonic() - T0, _cpu()
        try:
            return fn(*a, **kw)
        finally:
            end = time.monotonic() - T0
            EVENTS.append(
                f"{start:7.2f} -> {end:7.2f} s ({end - start:6.2f} s) "
                f"{threading.current_thread().name:12s} {name} "
                f"[process CPU during it: {_cpu() - cpu0:.2f} s]"
            )

    setattr(module, name, timed)


def main() -> None:
    from backup_sidecar import cli
    from backup_sidecar.archiver import backup, packing, prerestore, restore, staging, verify

    for mod, names in (
        (backup, ("take_snapshot", "write_metadata", "publish")),
        (packing, ("check_all", "pack_databases")),
        (verify, ("_extract", "integrity_check")),
        (restore, ("verify_archive", "write_locked", "safety_archive")),
        (prerestore, ("create_backup",)),
        (staging, ("staging_area",)),
    ):
        for name in names:
            if hasattr(mod, name) and name != "staging_area":
                _wrap(mod, name)
    EVENTS.append(f"{time.monotonic() - T0:7.2f} s imports done")
    try:
        cli.main(sys.argv[1:], standalone_mode=False)
    finally:
        EVENTS.append(f"{time.monotonic() - T0:7.2f} s end; process CPU {_cpu():.2f} s")
        print("\n".join(EVENTS), file=sys.stderr)


if __name__ == "__main__":
    main()
