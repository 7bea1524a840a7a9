"""Check and pack the staged copies: ``integrity_check``, hashing and compression into the archive.

After the snapshots, the slow work can run on two cores at once (``threads=2``):
``integrity_check`` of the staged copies in a worker thread, hashing and compression of the
same copies on the calling thread (SQLite, hashlib and ISA-L all release the GIL); with
``pace`` the packing of copies of at least `PACE_FROM_BYTES` yields its CPU every 16 KiB while
the check runs. With ``threads=1`` they
run one after the other (see backup_sidecar.cpus for the choice).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from backup_sidecar.archiver.gzipstream import GzipWriter
from backup_sidecar.archiver.model import ProgressFn
from backup_sidecar.archiver.snapshot import Snapshot
from backup_sidecar.archiver.sqlitefacts import DatabaseFacts, collect_facts, integrity_check
from backup_sidecar.archiver.staging import create_exclusive
from backup_sidecar.archiver.tarstream import end_of_archive, member_header, padding
from backup_sidecar.errors import OperationAbortedError

CHUNK = 1 << 20
#: Paced packing (``pace=True``): while the check runs on the other thread, hash and compress
#: 16 KiB (about 0.05 ms of CPU) at a time and sleep 0.12 ms between slices, so a waking
#: application thread finds a CPU idle or waits one short slice. See backup_sidecar.cpus.
SLICE = 16 << 10
PAUSE_S = 0.00012
#: Staged copies smaller than this in total are packed unpaced: their check is over in about a
#: second, and paced packing (about 60 MB/s) outlasted it, so the unpaced rest of the packing
#: after the check made a 100 MiB backup about 1.2x the check's length again. A 1 GiB backup
#: (the writer-latency targets of bench/RESULTS.md) is paced as before.
PACE_FROM_BYTES = 256 << 20


@dataclass(frozen=True)
class Checked:
    """A staged copy's integrity_check result, and its facts when the check passed."""

    result: str
    facts: DatabaseFacts | None


@dataclass(frozen=True)
class _Body:
    """Where the database members go: ``path`` from byte ``offset`` on."""

    path: Path
    offset: int = 0


@dataclass(frozen=True)
class Packer:
    """How one backup checks and packs its staged copies."""

    now: datetime
    level: int
    threads: int
    pace: bool
    report: ProgressFn
    should_stop: Callable[[], bool]

    def check_and_pack(
        self, snaps: Sequence[Snapshot], out: Path, *, offset: int, keep: bool = False
    ) -> tuple[list[Checked], list[str]]:
        """integrity_check, then hashing and compression into ``out`` from ``offset`` on; on two
        threads at once with ``threads=2`` (the check in a worker thread). With ``keep``, copies
        that fail the check are packed all the same."""
        body = _Body(out, offset)
        if keep:
            results = check_all(snaps, self.should_stop)
            if self.should_stop():
                raise OperationAbortedError("backup")
            digests = self._pack(snaps, body, self.should_stop)
            facts = [
                _facts(snap) if r == "ok" else None for snap, r in zip(snaps, results, strict=True)
            ]
        elif self.threads < 2:
            self.report("check", 0, len(snaps))
            results = check_all(snaps, self.should_stop)
            self.report("check", len(snaps), len(snaps))
            if self.should_stop():
                raise OperationAbortedError("backup")
            if any(r != "ok" for r in results):
                digests = ["" for _ in snaps]  # not archived: the check failed, skip packing
            else:
                digests = self._pack(snaps, body, self.should_stop)
            facts = [_facts(snap) for snap in snaps]
        else:
            results, digests, facts = self._check_while_packing(snaps, body)
        checked = [
            Checked(r, f if r == "ok" else None) for r, f in zip(results, facts, strict=True)
        ]
        return checked, digests

    def _check_while_packing(
        self, snaps: Sequence[Snapshot], body: _Body
    ) -> tuple[list[str], list[str], list[DatabaseFacts | None]]:
        failed = threading.Event()

        def stop() -> bool:
            return failed.is_set() or self.should_stop()

        pace = self.pace and sum(s.staged.stat().st_size for s in snaps) >= PACE_FROM_BYTES
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="integrity") as pool:
            checks = pool.submit(check_all, snaps, stop)
            try:
                digests = self._pack(snaps, body, stop, pace=lambda: pace and not checks.done())
                # Packing usually ends first: count rows while the check is still running.
                facts = [_facts(snap) for snap in snaps]
            except BaseException:
                failed.set()  # no need to finish checking copies that will not be archived
                raise
            finally:
                results = checks.result()
        if self.should_stop():
            raise OperationAbortedError("backup")
        return results, digests, facts

    def _pack(
        self,
        snaps: Sequence[Snapshot],
        body: _Body,
        should_stop: Callable[[], bool],
        *,
        pace: Callable[[], bool] = lambda: False,
    ) -> list[str]:
        return pack_databases(
            snaps,
            out=body.path,
            offset=body.offset,
            level=self.level,
            now=self.now,
            progress=self.report,
            should_stop=should_stop,
            pace=pace,
        )


def check_all(snaps: Sequence[Snapshot], should_stop: Callable[[], bool]) -> list[str]:
    return [integrity_check(snap.staged, should_stop=should_stop) for snap in snaps]


def _facts(snap: Snapshot) -> DatabaseFacts | None:
    """The staged copy's facts, or None when it is too damaged to read (the check says why)."""
    try:
        return collect_facts(snap.staged)
    except sqlite3.DatabaseError:
        return None


def pack_databases(
    snaps: Sequence[Snapshot],
    *,
    out: Path,
    offset: int = 0,
    level: int,
    now: datetime,
    progress: ProgressFn,
    should_stop: Callable[[], bool],
    pace: Callable[[], bool] = lambda: False,
) -> list[str]:
    """Compress the database members (and the tar end marker) into one gzip member written to
    the new file ``out`` from ``offset`` on, in short slices with pauses while ``pace()`` is
    true."""
    total = sum(s.staged.stat().st_size for s in snaps)
    done = 0
    digests = []
    fd = create_exclusive(out)
    with os.fdopen(fd, "wb") as raw, GzipWriter(raw, level=level) as gz:
        raw.seek(offset)
        for snap in snaps:
            size = snap.staged.stat().st_size
            gz.write(member_header(snap.spec.member, size=size, mtime=int(now.timestamp())))
            digest = hashlib.sha256()
            with snap.staged.open("rb") as src:
                while chunk := src.read(SLICE if (pacing := pace()) else CHUNK):
                    if should_stop():
                        raise OperationAbortedError("backup")
                    digest.update(chunk)
                    gz.write(chunk)
                    done += len(chunk)
                    progress("pack", done, total)
                    if pacing:
                        time.sleep(PAUSE_S)
            gz.write(padding(size))
            digests.append(digest.hexdigest())
        gz.write(end_of_archive())
    return digests
