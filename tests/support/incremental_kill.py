"""Run one incremental backup (or one prune) of the configured policy and SIGKILL this process
between two databases: as the operation reaches KILL_DB's page store.

Usage: incremental_kill.py CONFIG POLICY KILL_DB [backup|prune]
What a kill -9 of the sidecar between two databases leaves: a backup, the earlier databases'
manifests complete and none for KILL_DB or any after it; a prune, the first expired backup's
manifests of the earlier databases deleted and KILL_DB's and later ones still there.
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
    config, policy, kill_db, *rest = sys.argv[1:]
    operation = rest[0] if rest else "backup"
    settings = load_settings(Path(config), environ={})
    rt = Configured.of(
        settings, resolve_paths(settings, environ={}, cwd=Path(config).parent)
    ).runtime
    target = "create_backup" if operation == "backup" else "delete_backup"
    real = getattr(pagestore, target)

    def killing(*args: Any, store: Path | None = None, **kwargs: Any) -> Any:
        where = store if store is not None else args[0]  # create's keyword, delete's first
        if Path(where).name == kill_db:
            os.kill(os.getpid(), signal.SIGKILL)
        if store is not None:
            kwargs["store"] = store
        return real(*args, **kwargs)

    setattr(pagestore, target, killing)
    if operation == "backup":
        jobs.run_backup(rt, policy=policy)
    else:
        jobs.run_prune(rt, policies=[policy])
    raise SystemExit(f"the {operation} finished: {kill_db!r} was never reached")


if __name__ == "__main__":
    main()
