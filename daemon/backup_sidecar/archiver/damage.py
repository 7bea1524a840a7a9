"""Damage markers: ``<name>.tar.gz.damaged`` next to an archive that failed a read check.

An archive is never edited: a scrub, a prune's read check or a failed restore drill writes this
small JSON file instead (atomically: a new file that no link can redirect, fsynced, then renamed
into place). `list` shows a marked archive as damaged with the marker's reason, and retention
neither deletes it nor counts it as a good copy.

The marker records the archive's size and mtime_ns: an archive replaced since (a good copy put
back from elsewhere) no longer matches and the marker is ignored. Deleting the marker clears the
mark. A marker is read back as untrusted input: at most 4 KiB, a regular file (never through a
link), and anything malformed still marks the archive, with a reason saying the marker is
unreadable (a damage report must not be lost to a bad byte in it).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from backup_sidecar.archiver.manifest import ARCHIVE_SUFFIX
from backup_sidecar.archiver.staging import fsync_dir

MARKER_SUFFIX = ".damaged"
MAX_MARKER_BYTES = 4096
_MAX_REASON_CHARS = 500


@dataclass(frozen=True)
class DamageMark:
    """What a marker says: why the archive is damaged, who found it and when (if known)."""

    reason: str
    found_by: str = ""
    marked_at: str = ""

    def describe(self) -> str:
        by = f" by {self.found_by}" if self.found_by else ""
        at = f" at {self.marked_at}" if self.marked_at else ""
        return f"marked damaged{by}{at}: {self.reason}"


def marker_path(archive: Path) -> Path:
    return archive.with_name(archive.name + MARKER_SUFFIX)


def _clean(text: str) -> str:
    """One printable line of bounded length (a marker's text goes into logs and tables)."""
    line = "".join(c if c.isprintable() else "?" for c in text.replace("\n", " "))
    return line[:_MAX_REASON_CHARS]


def mark_damaged(archive: Path, *, reason: str, found_by: str, now: datetime) -> Path:
    """Write (or replace) the archive's marker; returns its path. Never follows a link: the
    temporary file is created with O_EXCL|O_NOFOLLOW and ``rename`` replaces a planted link at
    the marker's name instead of writing through it."""
    st = archive.lstat()
    doc = {
        "archive": archive.name,
        "reason": _clean(reason),
        "found_by": found_by,
        "marked_at": now.isoformat(),
        "size_bytes": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }
    final = marker_path(archive)
    tmp = archive.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o644)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(json.dumps(doc, indent=2).encode() + b"\n")
            out.flush()
            os.fsync(out.fileno())
        tmp.rename(final)  # replaces a link at ``final``, never writes through it
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(final.parent)
    return final


def read_mark(archive: Path, st: os.stat_result) -> DamageMark | None:
    """The archive's mark, or None when it has no marker or the marker is about an earlier file
    of that name (size or mtime differ from ``st``, the archive's stat)."""
    path = marker_path(archive)
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return _unreadable(path, exc.strerror or str(exc))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return _unreadable(path, "not a regular file")
        data = os.read(fd, MAX_MARKER_BYTES + 1)
    except OSError as exc:
        return _unreadable(path, exc.strerror or str(exc))
    finally:
        os.close(fd)
    if len(data) > MAX_MARKER_BYTES:
        return _unreadable(path, f"larger than {MAX_MARKER_BYTES} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return _unreadable(path, "not valid JSON")
    if not isinstance(doc, dict) or not isinstance(doc.get("reason"), str):
        return _unreadable(path, "no reason in it")
    size, mtime = doc.get("size_bytes"), doc.get("mtime_ns")
    if _is_int(size) and _is_int(mtime) and (size, mtime) != (st.st_size, st.st_mtime_ns):
        return None  # the archive was replaced since it was marked
    found_by, marked_at = doc.get("found_by"), doc.get("marked_at")
    return DamageMark(
        reason=_clean(doc["reason"]),
        found_by=_clean(found_by) if isinstance(found_by, str) else "",
        marked_at=_clean(marked_at) if isinstance(marked_at, str) else "",
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _unreadable(path: Path, why: str) -> DamageMark:
    return DamageMark(reason=f"damage marker {path.name} is unreadable ({why})")


@dataclass(frozen=True)
class OrphanMarkers:
    """What `remove_orphan_markers` did: markers removed, and entries with a marker's name it
    left alone, each with why (a directory planted there, one it could not unlink)."""

    removed: tuple[Path, ...]
    left: tuple[tuple[Path, str], ...]


def remove_orphan_markers(backup_dir: Path) -> OrphanMarkers:
    """Delete markers whose archive is gone (deleted by hand). Never follows a link: a regular
    file or a symlink is unlinked (the link itself, never its target); anything else with a
    marker's name (a directory planted there) is left alone and reported, as is an entry that
    cannot be unlinked: one bad entry never stops the others, nor the scrub that calls this."""
    removed: list[Path] = []
    left: list[tuple[Path, str]] = []
    with os.scandir(backup_dir) as entries:
        for entry in entries:
            if not entry.name.endswith(ARCHIVE_SUFFIX + MARKER_SUFFIX) or entry.name[0] == ".":
                continue
            path = Path(entry.path)
            archive = Path(entry.path[: -len(MARKER_SUFFIX)])
            try:
                if os.path.lexists(archive):
                    continue
                mode = entry.stat(follow_symlinks=False).st_mode
                if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
                    left.append((path, "not a regular file: left alone"))
                    continue
                path.unlink()  # a link itself, never what it points to
            except FileNotFoundError:
                continue
            except OSError as exc:
                left.append((path, f"cannot remove: {exc.strerror or exc}"))
                continue
            removed.append(path)
    if removed:
        fsync_dir(backup_dir)
    return OrphanMarkers(tuple(removed), tuple(left))
