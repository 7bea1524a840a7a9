"""Create one archive: snapshot, check, hash, compress, and publish it atomically.

The copies are checked and packed by archiver/packing.py (on two cores at once with
``threads=2``) straight into the archive file behind room left for the metadata member, which
archiver/metawrite.py writes there at the end. Nothing is copied, and the archive is fsynced
once, at the end: flushing it as it grows was measured to delay many more of the application's
commits (each fsync of its own queued behind ours) than the one commit that waits for the
final flush.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path

from backup_sidecar.archiver import manifest as mf
from backup_sidecar.archiver.metawrite import (
    check_metadata,
    database_entries,
    metadata_room,
    write_metadata,
)
from backup_sidecar.archiver.model import (
    DEFAULT_LIMITS,
    ArchiveInfo,
    ArchiveStatus,
    DatabaseSpec,
    Limits,
    ProgressFn,
)
from backup_sidecar.archiver.packing import Packer
from backup_sidecar.archiver.sequence import next_sequence
from backup_sidecar.archiver.snapshot import Snapshot, take_snapshot
from backup_sidecar.archiver.staging import ensure_backup_dir, publish, reserve_name, staging_area
from backup_sidecar.archiver.tarstream import BLOCK
from backup_sidecar.errors import (
    ArchiveTooLargeError,
    BackupDirError,
    ManifestError,
    MemberNameError,
    MetadataRefusedError,
    SidecarError,
    UsageError,
)

DEFAULT_LEVEL = 1


def create_backup(
    databases: Sequence[DatabaseSpec],
    *,
    backup_dir: Path,
    name: str,
    policy: str,
    now: datetime,
    unique: bool = False,
    level: int = DEFAULT_LEVEL,
    threads: int = 2,
    pace: bool = False,
    lock_timeout: float = 30.0,
    limits: Limits = DEFAULT_LIMITS,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.monotonic,
    captured: Mapping[str, tuple[Path, str]] | None = None,
    taken: Callable[[str], str | None] | None = None,
) -> ArchiveInfo:
    """Write ``<backup_dir>/<name>.tar.gz`` holding every database in ``databases``, or nothing.

    An existing name is never overwritten: it raises ArchiveExistsError, or with ``unique``
    (for default, time-based names) the archive takes the first free ``<name>-N``; a name
    ``taken`` says another kind of backup holds is taken too (staging.reserve_name). An archive
    that verify would refuse under ``limits`` (the readers' limits) raises ArchiveTooLargeError
    and is never published.

    ``captured`` (the pre-restore safety backup) maps each database's name to a copy already
    taken, with its journal mode: the copy is archived as it is (never snapshotted again), and
    one that fails integrity_check is archived all the same, marked damaged (its
    ``integrity_check`` is the failure, and `list` shows the archive ``damaged``).
    """
    mf.validate_name(name)
    if not databases:
        raise UsageError("no databases selected for the backup")
    _check_members(databases)
    ensure_backup_dir(backup_dir)
    report = progress or (lambda stage, done, total: None)
    packer = Packer(
        now=now, level=level, threads=threads, pace=pace, report=report, should_stop=should_stop
    )
    started = clock()
    with (
        reserve_name(backup_dir, name, exact=not unique, taken=taken) as claimed,
        staging_area(backup_dir, purpose="backup") as area,
        _writing_into(backup_dir),
    ):
        if captured is None:
            snaps = _snapshots(
                databases,
                area,
                report=report,
                lock_timeout=lock_timeout,
                should_stop=should_stop,
                clock=clock,
            )
        else:
            snaps = [_adopt(spec, *captured[spec.name], area=area) for spec in databases]
        report("snapshot", len(databases), len(databases))
        _check_total(claimed, snaps, limits)
        tmp = area / "archive.tmp"
        room = metadata_room(claimed, policy, now, snaps)
        checked, digests = packer.check_and_pack(snaps, tmp, offset=room, keep=captured is not None)
        entries = database_entries(snaps, checked, digests, keep_damaged=captured is not None)
        with _discarding(snaps):
            sequence = next_sequence(backup_dir)
            doc = mf.build_metadata(
                name=claimed,
                created_at=now,
                policy=policy,
                databases=entries,
                duration_s=clock() - started,
                sequence=sequence,
            )
            check_metadata(claimed, doc, limits)
            manifest = _read_back(claimed, doc)
            tmp = write_metadata(tmp, doc, room=room, level=level, now=now)
            size = tmp.stat().st_size
            final = backup_dir / f"{claimed}{mf.ARCHIVE_SUFFIX}"
            publish(tmp, final)
    return ArchiveInfo(
        name=claimed,
        path=final,
        size_bytes=size,
        created_at=now,
        status=(
            ArchiveStatus.VERIFIED
            if all(e.integrity_check == "ok" for e in entries.values())
            else ArchiveStatus.DAMAGED
        ),
        policy=policy,
        databases=tuple(entries),
        manifest=manifest,
        sequence=sequence,
    )


def _snapshots(
    databases: Sequence[DatabaseSpec],
    area: Path,
    *,
    report: ProgressFn,
    lock_timeout: float,
    should_stop: Callable[[], bool],
    clock: Callable[[], float],
) -> list[Snapshot]:
    """A consistent copy of each database in the staging area, one after the other."""
    snaps = []
    for i, spec in enumerate(databases):
        report("snapshot", i, len(databases))
        snaps.append(
            take_snapshot(
                spec,
                dest=area / spec.member,
                lock_timeout=lock_timeout,
                should_stop=should_stop,
                clock=clock,
            )
        )
    return snaps


def _check_members(databases: Sequence[DatabaseSpec]) -> None:
    """Refuse, before any work, a member name the archive cannot hold or two databases that
    would be archived under one name (their staged copies would collide too)."""
    seen: dict[str, str] = {}
    for spec in databases:
        if problem := mf.database_member_problem(spec.member):
            raise MemberNameError(spec.name, spec.member, problem)
        if spec.member in seen:
            raise MemberNameError(
                spec.name, spec.member, f"is also the member name of database {seen[spec.member]!r}"
            )
        seen[spec.member] = spec.name


def _read_back(name: str, doc: dict[str, object]) -> mf.Manifest:
    """The metadata as every reader will parse it: a backup never publishes what verify
    would refuse."""
    try:
        return mf.parse_metadata(mf.encode_metadata(doc))
    except ManifestError as exc:
        raise MetadataRefusedError(name, str(exc)) from None


@contextlib.contextmanager
def _writing_into(backup_dir: Path) -> Iterator[None]:
    """Name the backup directory in a write failure there (a full or read-only filesystem):
    a bare `No space left on device` names no file, and the daemon counts only SidecarErrors."""
    try:
        yield
    except SidecarError:
        raise
    except OSError as exc:
        where = exc.filename
        if where is not None and not str(where).startswith(str(backup_dir)):
            raise  # not a write into the backup directory (e.g. the source vanished)
        detail = f"{exc.strerror or exc}" + (f" ({where})" if where else "")
        raise BackupDirError(backup_dir, f"cannot write the backup: {detail}") from exc


@contextlib.contextmanager
def _discarding(snaps: Sequence[Snapshot]) -> Iterator[None]:
    """Delete the staged copies (no longer needed) on a helper thread while the archive is
    flushed and published: dropping a 1 GiB copy's pages takes about 0.2 s, as long as the
    final fsync. The staging area's own cleanup still removes whatever is left."""

    def discard() -> None:
        for snap in snaps:
            with contextlib.suppress(OSError):
                snap.staged.unlink()

    helper = threading.Thread(target=discard, name="discard", daemon=True)
    helper.start()
    try:
        yield
    finally:
        helper.join()


def _adopt(spec: DatabaseSpec, copy: Path, journal_mode: str, *, area: Path) -> Snapshot:
    """A copy taken by the caller, linked into the staging area (the original stays put)."""
    staged = area / spec.member
    os.link(copy, staged, follow_symlinks=False)
    return Snapshot(
        spec=spec,
        staged=staged,
        source_journal_mode=journal_mode,
        sqlite_version=sqlite3.sqlite_version,
        copy_s=0.0,
    )


def _check_total(name: str, snaps: Sequence[Snapshot], limits: Limits) -> None:
    """Refuse databases whose tar stream would expand past what verify reads."""
    total = sum(snap.staged.stat().st_size for snap in snaps)
    overhead = (len(snaps) * 3 + 4) * BLOCK + limits.max_metadata_bytes
    if total + overhead > limits.max_total_bytes:
        raise ArchiveTooLargeError(name, "content", total + overhead, limits.max_total_bytes)
