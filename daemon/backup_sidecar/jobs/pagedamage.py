"""Markers beside the page stores: ``<backup_dir>/pages/<kind>/<db>/<NAME>``.

``.verified`` holds the image SHA-256 a verify matched; ``.damaged`` holds the image SHA-256
and the reason a scrub, drill or chain-head check found an incremental backup damaged. A
marker counts only while its SHA-256 is the manifest's (a backup deleted and made again under
that name starts clean). The directories are opened without following a link.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from backup_sidecar.archiver.safefs import backup_dir_fd, open_subdir
from backup_sidecar.errors import PageStoreError
from backup_sidecar.jobs.pagestores import PAGES_DIR, BriefBackup, PageBackup, pages_root
from backup_sidecar.pagestore import fsio

VERIFIED_DIR = ".verified"
DAMAGED_DIR = ".damaged"
log = structlog.get_logger(__name__)


def marker_dir(backup_dir: Path, kind: str, db: str, *, create: bool) -> int | None:
    """A descriptor of the ``kind`` markers' directory of ``db`` (None if absent)."""
    root = pages_root(backup_dir)
    with backup_dir_fd(backup_dir) as top:
        fds: list[int] = []
        try:
            fds.append(open_subdir(top, PAGES_DIR, where=root, create=create))
            fds.append(open_subdir(fds[-1], kind, where=root / kind, create=create))
            return open_subdir(fds[-1], db, where=root / kind / db, create=create)
        except FileNotFoundError:
            return None
        finally:
            for fd in fds:
                os.close(fd)


def write_marker(backup_dir: Path, kind: str, db: str, name: str, text: str) -> None:
    fd = marker_dir(backup_dir, kind, db, create=True)
    assert fd is not None
    try:
        where = pages_root(backup_dir) / kind / db
        fsio.write_file(fd, name, text.encode(), where=where, replace=True)
    finally:
        os.close(fd)


def read_marker(backup_dir: Path, kind: str, db: str, name: str) -> str | None:
    """The marker's text, or None if absent or unreadable."""
    fd = marker_dir(backup_dir, kind, db, create=False)
    if fd is None:
        return None
    try:
        where = pages_root(backup_dir) / kind / db
        return fsio.read_file(fd, name, where=where, limit=4096).decode(errors="replace")
    except (OSError, PageStoreError):
        return None
    finally:
        os.close(fd)


def drop_marker(backup_dir: Path, kind: str, db: str, name: str) -> None:
    fd = marker_dir(backup_dir, kind, db, create=False)
    if fd is not None:
        try:
            fsio.discard(fd, name)
        finally:
            os.close(fd)


def marked_names(backup_dir: Path, kind: str, db: str) -> set[str]:
    """The names with a ``kind`` marker in ``db`` (one listing; empty if none)."""
    try:
        fd = marker_dir(backup_dir, kind, db, create=False)
    except (OSError, PageStoreError):
        return set()
    if fd is None:
        return set()
    try:
        return {n for n in os.listdir(fd) if not n.startswith(".")}  # noqa: PTH208
    finally:
        os.close(fd)


def mark_page_damaged(backup_dir: Path, backup: PageBackup, reason: str, *, found_by: str) -> None:
    """Mark every database of ``backup`` damaged (and no longer verified), and log it the way
    an archive's damage is logged (``archive_damaged``); a marker that cannot be written is
    logged (the operation that found it still treats the backup as damaged)."""
    try:
        for db, m in backup.manifests.items():
            write_marker(backup_dir, DAMAGED_DIR, db, backup.name, f"{m.image_sha256}\n{reason}")
            drop_marker(backup_dir, VERIFIED_DIR, db, backup.name)
    except (OSError, PageStoreError) as exc:
        log.error("damage_marker_failed", archive=backup.name, error=str(exc))
    log.error(
        "archive_damaged",
        archive=backup.name,
        policy=backup.policy,
        reason=reason,
        found_by=found_by,
        kind="incremental",
    )


def damage_reason(backup_dir: Path, backup: PageBackup | BriefBackup) -> str | None:
    """Why ``backup`` was found damaged (a marker matching one of its images), or None."""
    for db, m in backup.manifests.items():
        found = damage_of(backup_dir, db, backup.name, m.image_sha256)
        if found is not None:
            return found
    return None


def damage_of(backup_dir: Path, db: str, name: str, image_sha256: str) -> str | None:
    text = read_marker(backup_dir, DAMAGED_DIR, db, name)
    if text is None:
        return None
    sha, _, reason = text.partition("\n")
    return (reason.strip() or "damaged") if sha.strip() == image_sha256 else None
