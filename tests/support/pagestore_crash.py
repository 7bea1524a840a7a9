"""Run one page store operation and SIGKILL this process at its Nth file system step.

Usage: pagestore_crash.py KILL_AT STORE backup DB NAME [PARENT] | delete NAME | gc | repack
       pagestore_crash.py KILL_AT BACKUP_DIR prune POLICY RULES_JSON
(``prune``: the jobs layer's prune of incremental POLICY, whose KeepRules keywords are
RULES_JSON, in the page stores under BACKUP_DIR: manifests deleted, then each store's GC.)
Steps are the calls that change files: os.write, os.fsync, os.replace, os.link, os.unlink.
KILL_AT 0 never kills; the last line printed is then the number of steps the operation took,
so a test can kill it at every one of them in turn.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backup_sidecar import jobs, pagestore
from backup_sidecar.archiver import KeepRules
from backup_sidecar.jobs.runtime import IncrementalSpec

STEPS = ("write", "fsync", "replace", "link", "unlink")


def _count_steps(kill_at: int) -> list[int]:
    count = [0]

    def wrap(real: Callable[..., Any]) -> Callable[..., Any]:
        def step(*args: Any, **kwargs: Any) -> Any:
            count[0] += 1
            if count[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)

        return step

    for name in STEPS:
        setattr(os, name, wrap(getattr(os, name)))
    return count


def _prune(backup_dir: Path, policy: str, rules: str) -> None:
    rt = jobs.Runtime(
        backup_dir=backup_dir,
        databases={},
        keep={policy: 0},
        incremental={policy: IncrementalSpec()},
        retention={policy: KeepRules(**json.loads(rules))},
    )
    result = jobs.run_prune(rt, policies=[policy])
    assert not result.failed, result.failed


def main() -> None:
    kill_at, store, op, *rest = sys.argv[1:]
    count = _count_steps(int(kill_at))
    root = Path(store)
    if op == "backup":
        db, name, *parent = rest
        now = datetime(2026, 12, 7, tzinfo=UTC)
        pagestore.create_backup(
            Path(db), store=root, name=name, now=now, parent=next(iter(parent), None)
        )
    elif op == "delete":
        pagestore.delete_backup(root, rest[0])
    elif op == "gc":
        pagestore.collect_garbage(root)
    elif op == "repack":  # a GC that then repacks every pack less than half live
        pagestore.collect_garbage(root, repack_below=0.5)
    elif op == "prune":
        _prune(root, *rest)
    else:
        raise SystemExit(f"unknown op {op!r}")
    print(count[0], flush=True)


if __name__ == "__main__":
    main()
