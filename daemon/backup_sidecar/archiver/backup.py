"""Create one archive: snapshot, check, hash, compress, and publish it atomically.

After the snapshots, the slow work can run on two cores at once (``threads=2``):
``integrity_check`` of the staged copies in a worker thread, hashing and compression of the
same copies on the calling thread (SQLite, hashlib and ISA-L all release the GIL); with
``pace`` the packing yields its CPU every 16 KiB while the check runs. With ``threads=1`` they
run one after the other (see backup_sidecar.cpus for the choice).

The metadata member must come first in the archive but depends on the check and the digests,
so the archive is one multi-member gzip file, ``gzip(metadata) + gzip(databases)``, written in
place: the database members go straight into the archive file behind a gap sized for the
largest metadata these databases can have, and the metadata member is written into the gap at
the end, made exactly that long by the spaces of its gzip header's comment field. Nothing is
copied, and the archive is fsynced once, at the end: flushing it as it grows was measured to
delay many more of the application's commits (each fsync of its own queued behind ours) than
the one commit that waits for the final flush.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from backup_sidecar.archiver import manifest as mf
from backup_sidecar.archiver.gzipstream import GzipWriter, compress_member_exact, member_bound
from backup_sidecar.archiver.model import (
    DEFAULT_LIMITS,
    ArchiveInfo,
    ArchiveStatus,
    DatabaseSpec,
    Limits,
    ProgressFn,
)
from backup_sidecar.archiver.sequence import next_sequence
from backup_sidecar.archiver.snapshot import Snapshot, take_snapshot
from backup_sidecar.archiver.sqlitefacts import (
    DatabaseFacts,
    collect_facts,
    header_page_size,
    integrity_check,
    one_line,
    user_tables,
)
from backup_sidecar.archiver.staging import (
    create_exclusive,
    ensure_backup_dir,
    publish,
    reserve_name,
    staging_area,
)
from backup_sidecar.archiver.tarstream import BLOCK, end_of_archive, member_header, padding
from backup_sidecar.errors import (
    ArchiveTooLargeError,
    BackupDirError,
    IntegrityCheckError,
    ManifestError,
    MemberNameError,
    MetadataRefusedError,
    OperationAbortedError,
    SidecarError,
    UsageError,
)

_CHUNK = 1 << 20
#: Paced packing (``pace=True``): while the check runs on the other thread, hash and compress
#: 16 KiB (about 0.05 ms of CPU) at a time and sleep 0.12 ms between slices, so a waking
#: application thread finds a CPU idle or waits one short slice. See backup_sidecar.cpus.
_SLICE = 16 << 10
_PAUSE_S = 0.00012
DEFAULT_LEVEL = 1


@dataclass(frozen=True)
class _Checked:
    result: str
    facts: DatabaseFacts | None


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
) -> ArchiveInfo:
    """Write ``<backup_dir>/<name>.tar.gz`` holding every database in ``databases``, or nothing.

    An existing name is never overwritten: it raises ArchiveExistsError, or with ``unique``
    (for default, time-based names) the archive takes the first free ``<name>-N``. An archive
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
    job = _Job(
        databases=databases,
        backup_dir=backup_dir,
        policy=policy,
        now=now,
        level=level,
        threads=threads,
        pace=pace,
        lock_timeout=lock_timeout,
        report=progress or (lambda stage, done, total: None),
        should_stop=should_stop,
        clock=clock,
    )
    started = clock()
    with (
        reserve_name(backup_dir, name, exact=not unique) as claimed,
        staging_area(backup_dir, purpose="backup") as area,
        _writing_into(backup_dir),
    ):
        if captured is None:
            snaps = [job.snapshot(spec, area, i) for i, spec in enumerate(databases)]
        else:
            snaps = [_adopt(spec, *captured[spec.name], area=area) for spec in databases]
        job.report("snapshot", len(databases), len(databases))
        _check_total(claimed, snaps, limits)
        tmp = area / "archive.tmp"
        room = _metadata_room(claimed, policy, now, snaps)
        checked, digests = job.check_and_pack(snaps, tmp, offset=room, keep=captured is not None)
        entries = _entries(snaps, checked, digests, keep_damaged=captured is not None)
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
            _check_metadata(claimed, doc, limits)
            manifest = _read_back(claimed, doc)
            tmp = _finish(tmp, doc, room=room, level=level, now=now)
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


@dataclass(frozen=True)
class _Body:
    """Where the database members go: ``path`` from byte ``offset`` on."""

    path: Path
    offset: int = 0


@dataclass(frozen=True)
class _Job:
    """One backup's settings, shared by its steps."""

    databases: Sequence[DatabaseSpec]
    backup_dir: Path
    policy: str
    now: datetime
    level: int
    threads: int
    pace: bool
    lock_timeout: float
    report: ProgressFn
    should_stop: Callable[[], bool]
    clock: Callable[[], float]

    def snapshot(self, spec: DatabaseSpec, area: Path, index: int) -> Snapshot:
        self.report("snapshot", index, len(self.databases))
        return take_snapshot(
            spec,
            dest=area / spec.member,
            lock_timeout=self.lock_timeout,
            should_stop=self.should_stop,
            clock=self.clock,
        )

    def check_and_pack(
        self, snaps: Sequence[Snapshot], out: Path, *, offset: int, keep: bool = False
    ) -> tuple[list[_Checked], list[str]]:
        """integrity_check, then hashing and compression into ``out`` from ``offset`` on; on two
        threads at once with ``threads=2`` (the check in a worker thread). With ``keep``, copies
        that fail the check are packed all the same."""
        body = _Body(out, offset)
        if keep:
            results = _check_all(snaps, self.should_stop)
            if self.should_stop():
                raise OperationAbortedError("backup")
            digests = self._pack(snaps, body, self.should_stop)
            facts = [
                _facts(snap) if r == "ok" else None for snap, r in zip(snaps, results, strict=True)
            ]
        elif self.threads < 2:
            self.report("check", 0, len(snaps))
            results = _check_all(snaps, self.should_stop)
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
            _Checked(r, f if r == "ok" else None) for r, f in zip(results, facts, strict=True)
        ]
        return checked, digests

    def _check_while_packing(
        self, snaps: Sequence[Snapshot], body: _Body
    ) -> tuple[list[str], list[str], list[DatabaseFacts | None]]:
        failed = threading.Event()

        def stop() -> bool:
            return failed.is_set() or self.should_stop()

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="integrity") as pool:
            checks = pool.submit(_check_all, snaps, stop)
            try:
                digests = self._pack(
                    snaps, body, stop, pace=lambda: self.pace and not checks.done()
                )
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
        return _pack_databases(
            snaps,
            out=body.path,
            offset=body.offset,
            level=self.level,
            now=self.now,
            progress=self.report,
            should_stop=should_stop,
            pace=pace,
        )


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


def _check_all(snaps: Sequence[Snapshot], should_stop: Callable[[], bool]) -> list[str]:
    return [integrity_check(snap.staged, should_stop=should_stop) for snap in snaps]


def _facts(snap: Snapshot) -> DatabaseFacts | None:
    """The staged copy's facts, or None when it is too damaged to read (the check says why)."""
    try:
        return collect_facts(snap.staged)
    except sqlite3.DatabaseError:
        return None


def _pack_databases(
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
                while chunk := src.read(_SLICE if (pacing := pace()) else _CHUNK):
                    if should_stop():
                        raise OperationAbortedError("backup")
                    digest.update(chunk)
                    gz.write(chunk)
                    done += len(chunk)
                    progress("pack", done, total)
                    if pacing:
                        time.sleep(_PAUSE_S)
            gz.write(padding(size))
            digests.append(digest.hexdigest())
        gz.write(end_of_archive())
    return digests


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


def _damaged_entry(snap: Snapshot, result: str, digest: str) -> mf.DatabaseEntry:
    """A copy archived as it is although it fails integrity_check (a pre-restore copy)."""
    size = snap.staged.stat().st_size
    page_size = header_page_size(snap.staged) or 4096
    return mf.DatabaseEntry(
        file=snap.spec.member,
        source_path=str(snap.spec.path),
        size_bytes=size,
        sha256=digest,
        page_size=page_size,
        page_count=size // page_size,
        journal_mode=snap.source_journal_mode,
        user_version=0,
        schema_sha256="",
        table_count=0,
        row_counts={},
        integrity_check=one_line(result) or "failed",
        sqlite_version=snap.sqlite_version,
        snapshot_seconds=0.0,
    )


def _entries(
    snaps: Sequence[Snapshot],
    checked: Sequence[_Checked],
    digests: Sequence[str],
    *,
    keep_damaged: bool = False,
) -> dict[str, mf.DatabaseEntry]:
    entries = {}
    for snap, check, digest in zip(snaps, checked, digests, strict=True):
        if keep_damaged and (check.result != "ok" or check.facts is None):
            entries[snap.spec.name] = _damaged_entry(snap, check.result, digest)
            continue
        if check.result != "ok":
            raise IntegrityCheckError(snap.spec.name, snap.spec.path, check.result)
        if check.facts is None:
            raise IntegrityCheckError(snap.spec.name, snap.spec.path, "schema unreadable")
        entries[snap.spec.name] = _entry(snap, check.facts, digest)
    return entries


def _entry(snap: Snapshot, facts: DatabaseFacts, digest: str) -> mf.DatabaseEntry:
    return mf.DatabaseEntry(
        file=snap.spec.member,
        source_path=str(snap.spec.path),
        size_bytes=snap.staged.stat().st_size,
        sha256=digest,
        page_size=facts.page_size,
        page_count=facts.page_count,
        journal_mode=snap.source_journal_mode,
        user_version=facts.user_version,
        schema_sha256=facts.schema_sha256,
        table_count=facts.table_count,
        row_counts=facts.row_counts,
        integrity_check="ok",
        sqlite_version=snap.sqlite_version,
        snapshot_seconds=round(snap.copy_s, 3),
    )


def _check_total(name: str, snaps: Sequence[Snapshot], limits: Limits) -> None:
    """Refuse databases whose tar stream would expand past what verify reads."""
    total = sum(snap.staged.stat().st_size for snap in snaps)
    overhead = (len(snaps) * 3 + 4) * BLOCK + limits.max_metadata_bytes
    if total + overhead > limits.max_total_bytes:
        raise ArchiveTooLargeError(name, "content", total + overhead, limits.max_total_bytes)


def _check_metadata(name: str, doc: dict[str, object], limits: Limits) -> None:
    """Refuse metadata that verify, list and restore would refuse as too large."""
    size = len(mf.encode_metadata(doc))
    if size > limits.max_metadata_bytes:
        raise ArchiveTooLargeError(name, f"{mf.METADATA_MEMBER}", size, limits.max_metadata_bytes)


def _metadata_room(name: str, policy: str, now: datetime, snaps: Sequence[Snapshot]) -> int:
    """The most bytes the metadata member of these staged copies can take once compressed: its
    size with every number at its longest (row counts included, which are not counted yet)."""
    entries = {}
    for snap in snaps:
        try:
            tables = user_tables(snap.staged)
        except sqlite3.DatabaseError:
            tables = []  # too damaged to read: the check refuses it, any room will do
        widest = DatabaseFacts(
            page_size=-(2**63),
            page_count=-(2**63),
            user_version=-(2**31),
            schema_sha256="0" * 64,
            table_count=len(tables),
            row_counts=dict.fromkeys(tables, -(2**63)),
        )
        entries[snap.spec.name] = _entry(snap, widest, "0" * 64)
    doc = mf.build_metadata(
        name=name,
        created_at=now,
        policy=policy,
        databases=entries,
        duration_s=-1e15,
        sequence=mf.MAX_SEQUENCE,
    )
    return member_bound(len(_metadata_member(doc, now)))


def _metadata_member(doc: dict[str, object], now: datetime) -> bytes:
    meta = mf.encode_metadata(doc)
    head = member_header(mf.METADATA_MEMBER, size=len(meta), mtime=int(now.timestamp()))
    return head + meta + padding(len(meta))


def _finish(tmp: Path, doc: dict[str, object], *, room: int, level: int, now: datetime) -> Path:
    """Write the metadata member into the room left for it at the start of ``tmp`` and make the
    archive durable. Should it not fit after all, the archive is rewritten into a new file with
    a room of the right size (a copy of the compressed databases, never a wrong archive)."""
    member = _metadata_member(doc, now)
    try:
        head = compress_member_exact(member, level=level, size=room)
    except ValueError:
        return _relocate(tmp, member, room=room, level=level)
    fd = os.open(tmp, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.pwrite(fd, head, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def _relocate(tmp: Path, member: bytes, *, room: int, level: int) -> Path:
    moved = tmp.with_name(f"{tmp.name}.2")
    head = compress_member_exact(member, level=level, size=member_bound(len(member)))
    with os.fdopen(create_exclusive(moved), "wb") as out, tmp.open("rb") as src:
        out.write(head)
        out.flush()
        offset = room  # the compressed databases start right after the room left for metadata
        remaining = os.fstat(src.fileno()).st_size - offset
        while remaining:
            sent = os.copy_file_range(src.fileno(), out.fileno(), remaining, offset)
            if sent == 0:
                raise OSError(f"short copy while writing {moved.name}")
            offset += sent
            remaining -= sent
        os.fsync(out.fileno())
    tmp.unlink()
    return moved
