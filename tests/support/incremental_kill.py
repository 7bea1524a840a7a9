"""Run one incremental backup of the configured policy and SIGKILL this process between two
databases: once every database before KILL_DB has its manifest, as KILL_DB's backup starts.

Usage: incremental_kill.py CONFIG POLICY KILL_DB
What a kill -9 of the sidecar between two databases' manifests leaves: the earlier databases'
manifests complete, none for KILL_DB or any after it.
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
    real = pagestore.create_backup

    def create_backup(db: Path, *, store: Path, **kwargs: Any) -> pagestore.Manifest:
        if store.name == kill_db:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(db, store=store, **kwargs)

    pagestore.create_backup = create_backup
    jobs.run_backup(rt, policy=policy)
    raise SystemExit(f"the backup finished: {kill_db!r} is not one of its databases")


if __name__ == "__main__":
    main()
