"""An incremental backup as a full archive: its ``backup_metadata.json`` and ``export NAME``.

The metadata is the one a full archive of the same databases carries (format 2: each
database's member name, size, SHA-256 of the image, page geometry, journal mode, schema hash,
row counts, the check's result; the seed's keys), built from the manifests and parsed back
by the archive reader, so a restore of an incremental backup goes through the same planning
and restore as an archive's, and ``export`` writes a standalone archive that the seed's tools,
``verify`` and a plain ``tar -xzf`` all read.
"""

from __future__ import annotations

import ctypes
import errno
import io
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

import structlog

from backup_sidecar.archiver import manifest as mf
from backup_sidecar.archiver.staging import create_exclusive, fsync_dir, publish, staging_area
from backup_sidecar.errors import ArchiveExistsError, ArchiveNotFoundError, CorruptArchiveError
from backup_sidecar.jobs.pagecheck import rebuild_checked
from backup_sidecar.jobs.pagestores import PageBackup, find_page_backup
from backup_sidecar.jobs.runtime import Runtime

log = structlog.get_logger(__name__)
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000


def archive_metadata(backup: PageBackup) -> tuple[dict[str, Any], mf.Manifest]:
    """The metadata document of ``backup`` as a full archive, and that document parsed back
    by the archive reader; CorruptArchiveError if the manifests cannot make one."""
    try:
        entries = {}
        for db, m in backup.manifests.items():
            meta = m.metadata
            entries[db] = mf.DatabaseEntry(
                file=str(meta.get("member") or db),
                source_path=str(meta.get("source_path", "")),
                size_bytes=m.image_size,
                sha256=m.image_sha256,
                page_size=m.page_size,
                page_count=m.page_count,
                journal_mode="wal" if m.header.wal else "delete",
                user_version=int(meta.get("user_version", m.header.user_version)),
                schema_sha256=str(meta.get("schema_sha256", "")),
                table_count=int(meta.get("table_count", 0)),
                row_counts={str(k): int(v) for k, v in dict(meta.get("row_counts", {})).items()},
                integrity_check=str(meta.get("integrity_check", "ok")),
                sqlite_version=str(meta.get("sqlite_version", "")),
                snapshot_seconds=0.0,  # no copy: the pages were read in the read transaction
            )
        doc = mf.build_metadata(
            name=backup.name,
            created_at=backup.created_at,
            policy=backup.policy,
            databases=entries,
            duration_s=0.0,
            sequence=backup.sequence,
        )
        return doc, mf.parse_metadata(mf.encode_metadata(doc))
    except (TypeError, ValueError) as exc:
        raise CorruptArchiveError(
            backup.name, f"its manifests make no archive metadata: {exc}"
        ) from None


def export_backup(rt: Runtime, name: str, *, out: Path | None, cwd: Path) -> Path:
    """Write incremental backup ``name`` as the new standalone archive ``out`` (default
    ``./NAME.tar.gz``): ``backup_metadata.json``, then each database under its seed member
    name. Every image is rebuilt and checked first; an existing ``out`` is never replaced."""
    backup = find_page_backup(rt.backup_dir, name)
    if backup is None:
        raise ArchiveNotFoundError(name)
    target = out if out is not None else cwd / f"{name}{mf.ARCHIVE_SUFFIX}"
    doc, parsed = archive_metadata(backup)
    with staging_area(rt.backup_dir, purpose="export") as area:
        staged = rebuild_checked(rt.backup_dir, backup, into=area)
        if target.exists() or target.is_symlink():
            raise ArchiveExistsError(target)
        try:
            fd = os.open(target.parent, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
            _export_through_part_file(target, doc, parsed, staged, backup)
        else:
            _export_anonymous(fd, target, doc, parsed, staged, backup)
    log.info("backup_exported", archive=name, path=str(target))
    return target


def _export_anonymous(
    fd: int,
    target: Path,
    doc: dict[str, Any],
    parsed: mf.Manifest,
    staged: dict[str, Path],
    backup: PageBackup,
) -> None:
    """Write into an unnamed file in ``target``'s directory (O_TMPFILE), then link it in:
    a kill at any point leaves nothing behind (the file has no name until it is complete)."""
    with os.fdopen(fd, "w+b") as raw:
        _write_tar(raw, doc, parsed, staged, backup)
        raw.flush()
        os.fsync(raw.fileno())
        if not _link_anonymous(raw.fileno(), target):
            # Neither link works here (no CAP_DAC_READ_SEARCH, no /proc): copied once into
            # the hidden part file, which a kill during the copy can leave.
            raw.seek(0)
            tmp = target.with_name(f".{target.name}.export-part")
            with os.fdopen(create_exclusive(tmp), "wb") as part:
                try:
                    shutil.copyfileobj(raw, part, 1 << 20)
                    part.flush()
                    os.fsync(part.fileno())
                    publish(tmp, target)
                finally:
                    tmp.unlink(missing_ok=True)
            return
    fsync_dir(target.parent)


def _link_anonymous(fd: int, target: Path) -> bool:
    """Give the unnamed file ``fd`` the name ``target`` (linkat(2) never replaces: two
    exports racing for one name cannot both win): by ``AT_EMPTY_PATH``, else through
    ``/proc/self/fd``; False if neither is allowed here."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.linkat(fd, b"", _AT_FDCWD, os.fsencode(target), _AT_EMPTY_PATH) == 0:
        return True
    if ctypes.get_errno() == errno.EEXIST:
        raise ArchiveExistsError(target)
    try:
        os.link(f"/proc/self/fd/{fd}", target, follow_symlinks=True)
    except FileExistsError:
        raise ArchiveExistsError(target) from None
    except OSError:
        return False
    return True


def _export_through_part_file(
    target: Path,
    doc: dict[str, Any],
    parsed: mf.Manifest,
    staged: dict[str, Path],
    backup: PageBackup,
) -> None:
    """A file system without O_TMPFILE: a hidden ``.NAME.export-part`` beside ``target``,
    linked in when complete (a kill here can leave it: README, Incremental backups)."""
    tmp = target.with_name(f".{target.name}.export-part")
    fd = create_exclusive(tmp)
    try:
        with os.fdopen(fd, "wb") as raw:
            _write_tar(raw, doc, parsed, staged, backup)
            raw.flush()
            os.fsync(raw.fileno())
        publish(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _write_tar(
    raw: Any, doc: dict[str, Any], parsed: mf.Manifest, staged: dict[str, Path], b: PageBackup
) -> None:
    mtime = int(b.created_at.timestamp())
    data = mf.encode_metadata(doc)
    with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.GNU_FORMAT, compresslevel=1) as tar:
        info = tarfile.TarInfo(mf.METADATA_MEMBER)
        info.size, info.mode, info.mtime = len(data), 0o600, mtime
        tar.addfile(info, io.BytesIO(data))
        for db, member in parsed.members().items():
            info = tarfile.TarInfo(member)
            info.size, info.mode, info.mtime = staged[db].stat().st_size, 0o600, mtime
            with staged[db].open("rb") as f:
                tar.addfile(info, f)
