"""The content a restore replaces: saved in ``.rescue/``, archived as ``pre_restore``, then let go.

Inside its write transactions a restore saves what each live database held to a fsynced file
in a rescue directory of its own (archiver/livewrite.py, archiver/preimage.py). That content
becomes the ``pre_restore`` safety archive, verified; only then is the rescue directory
removed. If the archive cannot be written, or the process dies first, the directory is kept
for the user.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

from backup_sidecar.archiver import manifest as mf
from backup_sidecar.archiver.backup import create_backup
from backup_sidecar.archiver.model import DatabaseSpec
from backup_sidecar.archiver.preimage import SAVED_MARKER, Captured
from backup_sidecar.archiver.safefs import backup_dir_fd, make_dir, open_subdir
from backup_sidecar.archiver.staging import staging_area
from backup_sidecar.archiver.verify import verify_archive
from backup_sidecar.errors import (
    BackupDirError,
    OperationAbortedError,
    RestoreIncompleteError,
    SidecarError,
)

PRE_RESTORE_POLICY = "pre_restore"
#: Where the content a restore replaced waits, fsynced, until its safety archive is published;
#: kept (never cleaned up) if that fails or the process dies first.
RESCUE_DIRNAME = ".rescue"


def safety_archive(
    captured: Sequence[Captured],
    *,
    databases: Mapping[str, DatabaseSpec],
    rescue: Path,
    backup_dir: Path,
    now: datetime,
    written: Sequence[str],
    failure: SidecarError | None,
    options: Mapping[str, int | bool],
    should_stop: Callable[[], bool],
) -> tuple[str | None, tuple[str, ...]]:
    """Archive the saved content, prove the archive, then let the rescue copies go."""
    saved = [c for c in captured if c.size_bytes > 0]  # an empty file held nothing
    safety: str | None = None
    damaged: tuple[str, ...] = ()
    try:
        if saved:
            archive = create_backup(
                [databases[c.name] for c in saved],
                backup_dir=backup_dir,
                name=mf.default_name(PRE_RESTORE_POLICY, now),
                unique=True,
                policy=PRE_RESTORE_POLICY,
                now=now,
                level=int(options["level"]),
                threads=int(options["threads"]),
                pace=bool(options["pace"]),
                captured={c.name: (c.path, c.journal_mode) for c in saved},
                should_stop=should_stop,
            )
            safety = archive.name
            assert archive.manifest is not None
            damaged = tuple(
                f"{db}: integrity_check ({e.integrity_check})"
                for db, e in archive.manifest.databases.items()
                if e.integrity_check != "ok"
            )
            # The checksums prove the archive holds the exact bytes that were checked.
            with staging_area(backup_dir, purpose="verify") as area:
                verify_archive(archive.path, staging=area, integrity=False)
    except Exception as exc:  # whatever it was, the saved content must not be lost
        why = "was interrupted" if isinstance(exc, OperationAbortedError) else f"failed: {exc}"
        raise RestoreIncompleteError(
            restored=written,
            reason=f"the pre_restore safety archive {why}",
            pre_restore_archive=None,
            rescue=rescue,
        ) from exc
    remove_rescue(rescue)
    if failure is not None and not written:
        raise failure
    if failure is not None:
        raise RestoreIncompleteError(
            restored=written,
            reason=str(failure),
            pre_restore_archive=safety,
            rescue=None,
        ) from failure
    return safety, damaged


def remove_rescue(rescue: Path) -> None:
    """Remove a restore's rescue directory, and ``.rescue`` itself once nothing is left in it."""
    shutil.rmtree(rescue, ignore_errors=True)
    with contextlib.suppress(OSError):
        rescue.parent.rmdir()  # fails (kept) while another restore's content is there


def new_rescue_dir(backup_dir: Path, now: datetime) -> Path:
    """A new directory for the content a restore replaces: removed by the restore once the
    safety archive is published (or when nothing was committed), kept for the user otherwise.
    ``.rescue`` is never followed if it is a link (safefs). Another restore's
    ``remove_rescue`` may remove an empty ``.rescue`` between its open and the mkdir in it:
    then it is made again."""
    for _ in range(_RESCUE_ATTEMPTS - 1):
        try:
            return _new_rescue_dir(backup_dir, now)
        except FileNotFoundError:
            continue
        except BackupDirError as exc:
            if not isinstance(exc.__cause__, FileNotFoundError):
                raise
    return _new_rescue_dir(backup_dir, now)


#: How often a restore makes ``.rescue`` again when other restores keep removing it.
_RESCUE_ATTEMPTS = 100


def _new_rescue_dir(backup_dir: Path, now: datetime) -> Path:
    where = backup_dir / RESCUE_DIRNAME
    with backup_dir_fd(backup_dir) as root:
        rescue_fd = open_subdir(root, RESCUE_DIRNAME, where=where, create=True)
        try:
            base = f"{mf.default_name(PRE_RESTORE_POLICY, now)}.{os.getpid()}"
            for n in itertools.count(1):
                name = f"{base}.{n}"
                if make_dir(rescue_fd, name, backup_dir=backup_dir, what=str(where)):
                    return where / name
        finally:
            os.close(rescue_fd)
    raise AssertionError("unreachable")  # pragma: no cover


def rescued_content(backup_dir: Path) -> list[Path]:
    """Directories of replaced content that a restore could not archive (it failed, or its
    process died after saving it); directories of dead restores that never got as far as
    saving (nothing was replaced) are removed."""
    root = backup_dir / RESCUE_DIRNAME
    if not root.is_dir() or root.is_symlink():
        return []
    kept = []
    for entry in sorted(root.iterdir()):
        pid = entry.name.split(".")[1] if entry.name.count(".") >= 2 else ""
        if entry.is_symlink() or not entry.is_dir():
            continue
        if pid.isdigit() and Path(f"/proc/{pid}").exists():
            continue  # a restore running now (or one this process reported when it failed)
        if (entry / SAVED_MARKER).exists():
            kept.append(entry)
        else:
            shutil.rmtree(entry, ignore_errors=True)
    with contextlib.suppress(OSError):
        root.rmdir()  # only once nothing is left in it
    return kept
