"""Databases a restore creates (none was at the path): written whole beside it, linked in.

The new file is written under a hidden name holding the restore's pid, fsynced, and linked to
the database's path, which fails rather than replace a database that appeared meanwhile. A
restore that dies leaves the hidden file, which clean_restore_leftovers removes.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

from backup_sidecar.archiver.model import DatabaseSpec
from backup_sidecar.archiver.restoreplan import Target
from backup_sidecar.archiver.staging import create_exclusive, fsync_dir
from backup_sidecar.errors import RestoreRefusedError


def _new_file_tmp(path: Path, pid: int) -> Path:
    return path.parent / f".{path.name}.restore-{pid}"


def clean_restore_leftovers(specs: Sequence[DatabaseSpec]) -> list[Path]:
    """Remove half-written new databases of restores whose process died (never a live file)."""
    removed = []
    for spec in specs:
        if not spec.path.parent.is_dir():
            continue
        # Escaped: a file name may hold glob characters ("data[1].db").
        for tmp in spec.path.parent.glob(f".{glob.escape(spec.path.name)}.restore-*"):
            pid = tmp.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


def create_new(target: Target) -> None:
    """A database that does not exist yet is created whole, by an atomic link."""
    spec = target.spec
    tmp = _new_file_tmp(spec.path, os.getpid())
    try:
        with (
            os.fdopen(create_exclusive(tmp, mode=0o644), "wb") as out,
            target.staged.open("rb") as src,
        ):
            while chunk := src.read(1 << 20):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, spec.path)
        except FileExistsError:
            raise RestoreRefusedError(
                f"database {spec.name!r} appeared at {spec.path} during the restore; run it again"
            ) from None
        fsync_dir(spec.path.parent)
    finally:
        tmp.unlink(missing_ok=True)
