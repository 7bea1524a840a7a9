"""Run one `prune` of the configured policy and SIGKILL this process between two databases'
manifest deletions: as the first expired backup's deletion reaches KILL_DB.

Usage: prune_kill.py CONFIG POLICY KILL_DB
What a kill -9 of the sidecar in the middle of a prune leaves: that backup's manifests of the
databases before KILL_DB deleted, KILL_DB's and later ones still there.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from backup_sidecar import jobs, pagestore
from backup_sidecar.service.live import Configured
from backup_sidecar.settings import load_settings, resolve_paths


def main() -> None:
    config, policy, kill_db = sys.argv[1:]
    settings = load_settings(Path(config), environ={})
    rt = Configured.of(
        settings, resolve_paths(settings, environ={}, cwd=Path(config).parent)
    ).runtime
    real = pagestore.delete_backup

    def delete_backup(store: Path, name: str, **kwargs: Any) -> None:
        if store.name == kill_db:
            os.kill(os.getpid(), signal.SIGKILL)
        real(store, name, **kwargs)

    pagestore.delete_backup = delete_backup
    jobs.run_prune(rt, policies=[policy])
    raise SystemExit(f"the prune finished: {kill_db!r} lost no backup")


if __name__ == "__main__":
    main()
