"""When a GC repacks: only after enough bytes may have died since its last repack pass.

A repack pass needs every slot a kept manifest names, so it parses every manifest in full
(up to 0.3 s of CPU each for a fragmented chain's head): an `every: 1m` policy at its keep,
pruning one backup a minute, spent ~70 CPU-s a minute in it. The plain GC needs only the
packs each manifest names (briefs.py), so the pass is run only when it may pay.

Every page a backup stores dies at most once, when the last backup naming it goes: over a
store's life the bytes that die are the bytes stored. So each deletion adds the deleted
backup's ``bytes_stored`` (from its brief) to ``<store>/.repack-debt``, before its manifest
goes; a GC asked for it repacks only when the debt reaches a fraction (``when``) of the
store's pack bytes, and clears the debt after the pass. A deleted manifest that cannot be
read (its bytes unknown), or a debt file that does not parse, makes the pass due.

The file only decides when the pass runs: it never decides what is live (the pass reads the
manifests themselves), so a lost, stale or hostile debt costs CPU or delays reclaiming
space, never a page a backup needs. It is written like every file of the store (a fsynced
temporary file in ``manifests/``, renamed into place, the directory fsynced, no link
followed); a kill leaves the old debt or the new, and at worst a temporary file the GC sweeps.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from backup_sidecar.archiver.safefs import open_file
from backup_sidecar.pagestore import fsio

DEBT = ".repack-debt"
_MAGIC = "backup-sidecar-repack-debt 1 "
#: The prune's GC repacks when the bytes deleted backups stored reach this fraction of the
#: store's pack bytes (at most one pass per tenth of the store stored and deleted again).
REPACK_WHEN = 0.1
_DUE = "due"
Problem = Callable[[str], None]


def read_debt(dirs: fsio.StoreDirs) -> int | None:
    """The bytes that may have died since the last pass; None: unknown (a pass is due)."""
    try:
        fd = open_file(dirs.root_fd, DEBT, os.O_RDONLY, where=dirs.root / DEBT)
    except FileNotFoundError:
        return 0
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        data = f.read(256)
    try:
        text = data.decode("ascii")
        if not (text.startswith(_MAGIC) and text.endswith("\n")):
            return None
        value = text[len(_MAGIC) : -1]
        return None if value == _DUE else max(int(value), 0)
    except ValueError:
        return None


def add_debt(dirs: fsio.StoreDirs, nbytes: int | None, *, on_problem: Problem) -> None:
    """Add ``nbytes`` (None: unknown, a pass is due) to the debt, durably."""
    debt = read_debt(dirs)
    _write(dirs, None if debt is None or nbytes is None else debt + max(nbytes, 0), on_problem)


def clear_debt(dirs: fsio.StoreDirs, *, on_problem: Problem) -> None:
    """After a repack pass: nothing has died since."""
    if read_debt(dirs) != 0:
        _write(dirs, 0, on_problem)


def repack_due(dirs: fsio.StoreDirs, *, when: float, store_bytes: int) -> bool:
    """Whether the debt reached ``when`` of the store's ``store_bytes`` (or is unknown)."""
    debt = read_debt(dirs)
    return debt is None or (debt > 0 and debt >= when * store_bytes)


def _write(dirs: fsio.StoreDirs, debt: int | None, on_problem: Problem) -> None:
    """Replace the debt; a failure (a directory planted in its place, a full disk) is
    reported, never raised: a debt that cannot be read again makes every pass due."""
    data = f"{_MAGIC}{_DUE if debt is None else debt}\n".encode("ascii")
    try:
        tmp, fd = fsio.create_temp(dirs.manifests_fd, where=dirs.manifests)
    except OSError as exc:
        on_problem(f"page store repack debt {dirs.root / DEBT} not written: {exc}")
        return
    try:
        try:
            fsio.write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, DEBT, src_dir_fd=dirs.manifests_fd, dst_dir_fd=dirs.root_fd)
        os.fsync(dirs.root_fd)
    except OSError as exc:
        on_problem(f"page store repack debt {dirs.root / DEBT} not written: {exc}")
    finally:
        with contextlib.suppress(OSError):
            fsio.discard(dirs.manifests_fd, tmp)
