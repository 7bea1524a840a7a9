"""Every backup of a store in brief (a manifest without its runs), cached on disk.

Listing a store's backups parses every manifest, runs included (up to 0.3 s of CPU each for a
fragmented chain's head): a day of `every: 1m` backups made each `list` and `backup --policy
P` of a command-line process take minutes. A brief holds what a listing needs (name, time,
image size and SHA-256, stats, metadata and the packs the runs name), and ``<store>/.briefs``
keeps the brief of every manifest by the identity of the file it was read from: name, inode,
size, mtime and ctime (ctime cannot be set back by a user). An unchanged store then costs a
directory listing, a stat per manifest and one read of the cache.

The cache is never trusted over the manifests: a manifest whose identity differs from the
cached one (replaced, rewritten, touched), or that is new, is parsed again; a cached entry
whose manifest is gone is dropped. Only manifests that parsed are cached (an unreadable one is
read again every time, so its error is never hidden). A manifest changed within a second of
the listing's start is not cached (its timestamps could still equal those of a later write
in the same clock tick, as git's "racy" entries). The file starts with a line holding its
format and the SHA-256 of the rest; one that does not check, parse and validate (truncated,
corrupt, hostile, planted as a link) is ignored in full and reported through ``on_problem``,
never raised. It is written like every file of the store: a fsynced temporary file in
``manifests/`` (the GC removes what a kill leaves there) renamed into place, the directory
fsynced, nothing followed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from backup_sidecar.archiver.safefs import open_file
from backup_sidecar.errors import ManifestFormatError, PageBackupNotFoundError
from backup_sidecar.pagestore import fsio, manifest
from backup_sidecar.pagestore.manifest import Manifest, check_name, parse_manifest

CACHE = ".briefs"
_MAGIC = b"backup-sidecar-briefs 1 "
#: Manifests changed this close to the listing's start are not cached (clock ticks, skew).
RACY_NS = 1_000_000_000
_Ident = tuple[int, int, int, int]
#: What a malformed cache can raise while it is decoded (never past ``_load``).
_MALFORMED = (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError)
Problem = Callable[[str], None]


@dataclass(frozen=True)
class Brief:
    """A backup's manifest without its runs: what a listing, a retention or the GC reads."""

    name: str
    created_at: str
    page_size: int
    page_count: int
    image_sha256: str
    packs: frozenset[str]
    stats: Mapping[str, int] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        return self.page_size * self.page_count

    @classmethod
    def of(cls, m: Manifest) -> Brief:
        return cls(
            m.name, m.created_at, m.page_size, m.page_count, m.image_sha256, m.packs,
            m.stats, m.metadata,
        )  # fmt: skip


#: store root -> (the cache file's identity, its entries): a file unchanged is not read again.
_memo: dict[str, tuple[_Ident, dict[str, tuple[_Ident, Brief]]]] = {}
_memo_lock = threading.Lock()


def list_briefs(
    store: Path, *, lock_timeout_s: float = fsio.LOCK_TIMEOUT_S, on_problem: Problem | None = None
) -> list[Brief | ManifestFormatError]:
    """``list_backups`` in brief: every backup by name, an unreadable one as its error (the
    same errors, in the same order), under the store's shared lock."""
    with fsio.open_store(store, exclusive=False, timeout_s=lock_timeout_s) as dirs:
        return briefs_in(dirs, on_problem=on_problem)


def briefs_in(
    dirs: fsio.StoreDirs, *, on_problem: Problem | None = None
) -> list[Brief | ManifestFormatError]:
    """``list_briefs`` in a store the caller holds open (and locked)."""
    report = on_problem or (lambda _: None)
    start_ns = time.time_ns()
    cached = _load(dirs, report)
    keep: dict[str, tuple[_Ident, Brief]] = {}
    out: list[Brief | ManifestFormatError] = []
    for file in fsio.listdir(dirs.manifests_fd, manifest.SUFFIX):
        name = file.removesuffix(manifest.SUFFIX)
        try:
            check_name(name)
            st = os.stat(file, dir_fd=dirs.manifests_fd, follow_symlinks=False)
        except (ValueError, FileNotFoundError):
            continue  # a stray file whose name is no backup's, or deleted meanwhile
        hit = cached.get(file)
        if hit is not None and hit[0] == _ident(st):
            keep[file] = hit
            out.append(hit[1])
            continue
        try:
            ident, brief = _read(dirs, name)
        except ManifestFormatError as exc:
            out.append(exc)
            continue
        except PageBackupNotFoundError:
            continue
        if max(ident[2], ident[3]) < start_ns - RACY_NS:
            keep[file] = (ident, brief)
        out.append(brief)
    if keep != cached:
        _save(dirs, keep, report)
    return out


def brief_of(dirs: fsio.StoreDirs, name: str) -> Brief:
    """Backup ``name`` in brief: its cached brief while its file is unchanged, else parsed
    (``rebuild.load_manifest``'s errors); the cache is not written."""
    file = manifest.manifest_file(name)
    try:
        st = os.stat(file, dir_fd=dirs.manifests_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise PageBackupNotFoundError(name) from None
    hit = _load(dirs, lambda _: None).get(file)
    return hit[1] if hit is not None and hit[0] == _ident(st) else _read(dirs, name)[1]


def remember(dirs: fsio.StoreDirs, written: Iterable[Brief], *, on_problem: Problem) -> None:
    """Cache the briefs of manifests this process just wrote under the store's exclusive lock
    (a repack's rewrites), by the identity of their files now: the next listing does not parse
    them again (not held back as racy, as a listing does with files it did not write)."""
    entries = dict(_load(dirs, on_problem))
    for brief in written:
        file = manifest.manifest_file(brief.name)
        st = os.stat(file, dir_fd=dirs.manifests_fd, follow_symlinks=False)
        entries[file] = (_ident(st), brief)
    _save(dirs, entries, on_problem)


def _ident(st: os.stat_result) -> _Ident:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _read(dirs: fsio.StoreDirs, name: str) -> tuple[_Ident, Brief]:
    """The manifest ``name`` in brief, with the identity of the very file its bytes came from
    (``rebuild.load_manifest``'s errors)."""
    file = manifest.manifest_file(name)
    where = dirs.manifests / file
    try:
        fd = open_file(dirs.manifests_fd, file, os.O_RDONLY, where=where)
        with os.fdopen(fd, "rb") as f:
            ident = _ident(os.fstat(f.fileno()))
            data = f.read(manifest.MAX_BYTES + 1)
    except FileNotFoundError:
        raise PageBackupNotFoundError(name) from None
    except OSError as exc:
        raise ManifestFormatError(name, f"cannot be read: {exc.strerror or exc}") from exc
    if len(data) > manifest.MAX_BYTES:
        reason = f"cannot be read: larger than {manifest.MAX_BYTES} bytes"
        raise ManifestFormatError(name, reason)
    return ident, Brief.of(parse_manifest(name, data))


def _load(dirs: fsio.StoreDirs, report: Problem) -> dict[str, tuple[_Ident, Brief]]:
    """The cached entries (empty if there is no cache, or it is not to be trusted)."""
    where = dirs.root / CACHE
    try:
        fd = open_file(dirs.root_fd, CACHE, os.O_RDONLY, where=where)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        report(f"page store cache {where} ignored: {exc}")
        return {}
    with os.fdopen(fd, "rb") as f:
        ident = _ident(os.fstat(f.fileno()))
        with _memo_lock:
            seen = _memo.get(str(dirs.root))
        if seen is not None and seen[0] == ident:
            return seen[1]
        try:
            entries = _decode(f.read())
        except (OSError, *_MALFORMED) as exc:
            report(f"page store cache {where} ignored: {exc}")
            return {}
    with _memo_lock:
        _memo[str(dirs.root)] = (ident, entries)
    return entries


def _decode(data: bytes) -> dict[str, tuple[_Ident, Brief]]:
    head, nl, body = data.partition(b"\n")
    if not nl or not head.startswith(_MAGIC):
        raise ValueError("not a cache of this format")
    if head[len(_MAGIC) :].decode("ascii") != hashlib.sha256(body).hexdigest():
        raise ValueError("its SHA-256 does not match (truncated or damaged)")
    doc = json.loads(body)
    packs, raw = doc["packs"], doc["entries"]
    if not (isinstance(packs, list) and isinstance(raw, dict)):
        raise ValueError("not a cache of this format")
    out: dict[str, tuple[_Ident, Brief]] = {}
    for file, (ident, e) in raw.items():
        name = file.removesuffix(manifest.SUFFIX)
        if manifest.manifest_file(name) != file or e["name"] != name:
            raise ValueError(f"entry {file!r} does not name its manifest")
        if len(ident) != 4 or not all(type(v) is int for v in ident):
            raise ValueError(f"entry {file!r}: its identity is not four integers")
        brief = Brief(
            name=name,
            created_at=_typed(e["created_at"], str),
            page_size=_typed(e["page_size"], int),
            page_count=_typed(e["page_count"], int),
            image_sha256=_typed(e["image_sha256"], str),
            packs=frozenset(_typed(packs[_index(i, len(packs))], str) for i in e["packs"]),
            stats=_typed(e["stats"], dict),
            metadata=_typed(e["metadata"], dict),
        )
        if not all(type(v) is int for v in brief.stats.values()):
            raise ValueError(f"entry {file!r}: 'stats' is not an object of integers")
        datetime.fromisoformat(brief.created_at)
        out[file] = (tuple(ident), brief)
    return out


def _index(value: Any, n: int) -> int:
    if type(value) is not int or not 0 <= value < n:
        raise ValueError(f"{value!r:.40} is not an index of the pack list")
    return value


def _typed(value: Any, kind: type) -> Any:
    if type(value) is not kind:
        raise ValueError(f"{value!r:.40} is not a {kind.__name__}")
    return value


def _encode(entries: Mapping[str, tuple[_Ident, Brief]]) -> bytes:
    packs = sorted({p for _, b in entries.values() for p in b.packs})
    number = {p: i for i, p in enumerate(packs)}
    raw = {
        file: [
            list(ident),
            {
                "name": b.name,
                "created_at": b.created_at,
                "page_size": b.page_size,
                "page_count": b.page_count,
                "image_sha256": b.image_sha256,
                "packs": sorted(number[p] for p in b.packs),
                "stats": dict(b.stats),
                "metadata": dict(b.metadata),
            },
        ]
        for file, (ident, b) in sorted(entries.items())
    }
    body = json.dumps({"packs": packs, "entries": raw}, separators=(",", ":")).encode()
    return _MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def _save(dirs: fsio.StoreDirs, entries: dict[str, tuple[_Ident, Brief]], report: Problem) -> None:
    """Replace the cache with ``entries``; a failure is reported, the listing stands."""
    where = dirs.root / CACHE
    try:
        data = _encode(entries)
        tmp, fd = fsio.create_temp(dirs.manifests_fd, where=dirs.manifests)
    except (OSError, TypeError, ValueError) as exc:
        report(f"page store cache {where} not written: {exc}")
        return
    try:
        try:
            fsio.write_all(fd, data)
            os.fsync(fd)
            os.replace(tmp, CACHE, src_dir_fd=dirs.manifests_fd, dst_dir_fd=dirs.root_fd)
            os.fsync(dirs.root_fd)
            ident = _ident(os.fstat(fd))  # after the rename, which sets the ctime
        finally:
            os.close(fd)
    except OSError as exc:
        report(f"page store cache {where} not written: {exc}")
        return
    finally:
        with contextlib.suppress(OSError):
            fsio.discard(dirs.manifests_fd, tmp)
    with _memo_lock:
        _memo[str(dirs.root)] = (ident, entries)
