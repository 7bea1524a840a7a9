"""Maintenance of a live database: WAL checkpoint, ``PRAGMA optimize``, ``VACUUM``.

Each opens its own short connection with a busy timeout of the caller's bound on how long the
application's writers may wait: a checkpoint (TRUNCATE) that cannot get past the application's
readers and writers within it gives up (SQLite reports it busy) rather than hold them off
longer. The callers hold the database's lock in the backup directory, so none of these runs
during a backup or restore of that database, nor two at once.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

#: VACUUM reads the database's used pages, writes them to a temporary database and copies them
#: back (in WAL mode through the -wal, which the checkpoint after it copies once more; in
#: rollback mode the journal takes the old pages first): about three (four) times the work of
#: the backup's snapshot copy of the same bytes.
VACUUM_COPY_FACTOR = {True: 3.0, False: 4.0}
#: The least a VACUUM is estimated to take: opening, locking and syncing cost this much even for
#: a tiny database.
VACUUM_FLOOR_S = 0.05


@dataclass(frozen=True)
class Checkpointed:
    """A ``wal_checkpoint(TRUNCATE)``: ``busy`` when it could not complete within the bound;
    ``log_frames`` in the WAL and ``checkpointed_frames`` copied back as SQLite reports them
    (-1: not in WAL mode; 0 and 0 once TRUNCATE emptied it)."""

    busy: bool
    wal_bytes_before: int
    log_frames: int
    checkpointed_frames: int
    wal_bytes_after: int
    duration_s: float


@dataclass(frozen=True)
class Vacuumed:
    """A ``VACUUM`` (or ``incremental_vacuum``): sizes before and after (main file + -wal)."""

    incremental: bool
    bytes_before: int
    bytes_after: int
    duration_s: float


def _connect(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    uri = f"file:{path.absolute()}?mode=rw"  # never create a database that is not there
    return sqlite3.connect(uri, uri=True, timeout=busy_timeout_s, isolation_level=None)


def wal_bytes(path: Path) -> int:
    try:
        return path.with_name(path.name + "-wal").stat().st_size
    except FileNotFoundError:
        return 0


def _on_disk(path: Path) -> int:
    return path.stat().st_size + wal_bytes(path)


def checkpoint_truncate(path: Path, *, busy_timeout_s: float) -> Checkpointed:
    """``PRAGMA wal_checkpoint(TRUNCATE)``, waiting on the application at most the bound."""
    started, before = time.monotonic(), wal_bytes(path)
    conn = _connect(path, busy_timeout_s)
    try:
        row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.close()
    busy, log_frames, done = (int(v) for v in row)
    return Checkpointed(
        busy=bool(busy),
        wal_bytes_before=before,
        log_frames=log_frames,
        checkpointed_frames=done,
        wal_bytes_after=wal_bytes(path),
        duration_s=time.monotonic() - started,
    )


def optimize(path: Path, *, busy_timeout_s: float) -> float:
    """``PRAGMA optimize`` (runs ANALYZE where the query planner would gain); its seconds."""
    started = time.monotonic()
    conn = _connect(path, busy_timeout_s)
    try:
        conn.execute("PRAGMA optimize")
    finally:
        conn.close()
    return time.monotonic() - started


@dataclass(frozen=True)
class Layout:
    """What a VACUUM would work on: pages, free pages, page size, auto_vacuum, journal mode."""

    page_count: int
    freelist_count: int
    page_size: int
    incremental: bool
    wal: bool

    @property
    def freelist_ratio(self) -> float:
        return self.freelist_count / self.page_count if self.page_count else 0.0

    @property
    def used_bytes(self) -> int:
        return (self.page_count - self.freelist_count) * self.page_size


def layout(path: Path, *, busy_timeout_s: float) -> Layout:
    """Read the database's page counts and modes (a read only: nothing is written)."""
    conn = _connect(path, busy_timeout_s)
    try:
        ints = [
            int(conn.execute(f"PRAGMA {p}").fetchone()[0])
            for p in ("page_count", "freelist_count", "page_size", "auto_vacuum")
        ]
        mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    finally:
        conn.close()
    return Layout(ints[0], ints[1], ints[2], incremental=ints[3] == 2, wal=mode == "wal")


def vacuum_estimate_s(found: Layout, *, copy_bytes_per_s: float) -> float:
    """Seconds a VACUUM is expected to hold the writers off, from a measured copy rate."""
    if found.incremental:  # frees pages at the end of the file: no copy of the used ones
        return VACUUM_FLOOR_S + found.freelist_count * found.page_size / copy_bytes_per_s
    factor = VACUUM_COPY_FACTOR[found.wal]
    return VACUUM_FLOOR_S + factor * found.used_bytes / copy_bytes_per_s


def vacuum(path: Path, found: Layout, *, busy_timeout_s: float) -> Vacuumed:
    """VACUUM (``incremental_vacuum`` under auto_vacuum=incremental); in WAL mode followed by a
    TRUNCATE checkpoint so the file shrinks now rather than at the application's next one."""
    started = time.monotonic()
    before = _on_disk(path)
    conn = _connect(path, busy_timeout_s)
    try:
        if found.incremental:
            # executescript steps the statement to its end: execute() stepped it once, and
            # each step frees one page.
            conn.executescript("PRAGMA incremental_vacuum;")
        else:
            conn.execute("VACUUM")
        if found.wal:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.close()
    return Vacuumed(
        incremental=found.incremental,
        bytes_before=before,
        bytes_after=_on_disk(path),
        duration_s=time.monotonic() - started,
    )
