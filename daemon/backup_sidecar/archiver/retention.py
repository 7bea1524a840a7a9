"""Retention: which archives a policy no longer needs, and deleting them safely.

``select`` is pure (archives + each policy's rules -> expired, and why the rest stay) so its
guarantees are property-tested: per policy the rules of gfs.py (restic's ``forget``) keep their
archives, newest by ``ArchiveInfo.newness`` (the creation sequence: an archive dated in the
future by a stepped clock is not the newest), and the newest verified archive of a policy is
never expired even when newer damaged or legacy ones push it out of the rules.
``select_expired`` is the plain count (``keep: K``: the newest K stay).
Damaged archives are never expired: they are kept for an operator to look at.

With a ``good`` predicate (the read check, see readcheck.py) the archive a policy relies on is
proven first: its newest verified archives are tried newest first until one passes, and only that
one is the protected anchor. Those that fail are treated as damaged (kept, and not counted among
the K), so a rotten newest archive can never push the last good one out.

Names are not restore points: hard links of one file (same st_dev, st_ino), and byte copies of
one archive (metadata recording the same backup name, sequence, time and database SHA-256s),
are ONE restore point, counted once toward K under the name the metadata records (the
original). The other names share its fate: kept while it is kept, expired with it; a
duplicate never pushes out another restore point.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from pathlib import Path

from backup_sidecar.archiver import manifest as mf
from backup_sidecar.archiver.gfs import KeepRules, keep_reasons
from backup_sidecar.archiver.model import ArchiveInfo, ArchiveStatus
from backup_sidecar.archiver.staging import fsync_dir


@dataclass(frozen=True)
class PruneResult:
    deleted: list[ArchiveInfo] = field(default_factory=list)
    skipped_busy: list[ArchiveInfo] = field(default_factory=list)
    failed: list[tuple[ArchiveInfo, str]] = field(default_factory=list)
    #: Archives whose read check failed during this prune (marked damaged, kept), with the fault.
    damaged: list[tuple[ArchiveInfo, str]] = field(default_factory=list)
    #: Archives the rules keep, each with why (``daily 2026-12-06``, ``last 3``, ...).
    kept: list[tuple[ArchiveInfo, tuple[str, ...]]] = field(default_factory=list)
    #: Page stores whose garbage collection failed (database, why): the expired manifests
    #: went, the packs only they needed stay until a prune collects the store.
    gc_failed: list[tuple[str, str]] = field(default_factory=list)


def select_expired(
    archives: Sequence[ArchiveInfo],
    *,
    keep: Mapping[str, int],
    policies: Collection[str] | None = None,
    good: Callable[[ArchiveInfo], bool] | None = None,
) -> list[ArchiveInfo]:
    """Archives beyond the ``keep[policy]`` newest of their policy, sparing each policy's newest
    verified archive. Policies absent from ``keep`` (or filtered out by ``policies``) expire
    nothing. With ``good``, the spared archive is the newest verified one for which ``good`` is
    true; the newer verified ones it rejected are neither expired nor counted."""
    rules = {policy: KeepRules(last=count) for policy, count in keep.items()}
    return select(archives, rules=rules, policies=policies, good=good).expired


@dataclass(frozen=True)
class Selection:
    """What retention expires, and why each other archive of the policies it judged stays."""

    expired: list[ArchiveInfo] = field(default_factory=list)
    #: Every archive of a judged policy that stays (damaged ones and those ``good`` rejected
    #: aside), with the rules that keep it (``newest verified`` for the protected one).
    kept: list[tuple[ArchiveInfo, tuple[str, ...]]] = field(default_factory=list)


def select(
    archives: Sequence[ArchiveInfo],
    *,
    rules: Mapping[str, KeepRules],
    policies: Collection[str] | None = None,
    good: Callable[[ArchiveInfo], bool] | None = None,
    tz: tzinfo = UTC,
) -> Selection:
    """Apply each policy's ``rules`` (gfs.py; buckets in ``tz``) to its restore points, newest
    first by creation sequence, sparing its newest verified archive as ``select_expired``
    does. Policies absent from ``rules`` (or filtered out by ``policies``) are not judged."""
    by_policy: dict[str, list[ArchiveInfo]] = {}
    for archive in archives:
        if archive.status is ArchiveStatus.DAMAGED:
            continue
        if policies is not None and archive.policy not in policies:
            continue
        if archive.policy in rules:
            by_policy.setdefault(archive.policy, []).append(archive)
    result = Selection()
    for policy, group in by_policy.items():
        names = _restore_points(group)
        points = sorted((same[0] for same in names.values()), key=lambda a: a.newness)
        points.reverse()
        anchor, rejected = _anchor(points, good)
        skip = {id(a) for a in rejected}
        counted = [a for a in points if id(a) not in skip]
        for point, why in zip(counted, keep_reasons(counted, rules[policy], tz=tz), strict=True):
            reasons = ("newest verified",) if not why and point is anchor else why
            if reasons:
                result.kept.extend((name, reasons) for name in names[id(point)])
            else:
                result.expired.extend(names[id(point)])
    return result


def restore_point_id(manifest: mf.Manifest) -> str | None:
    """What one backup's archive files share, whatever their names: its recorded name,
    sequence, time and every database's SHA-256 (hashed: the catalog keeps it for thousands of
    archives). None for the seed's archives, which record no checksums (their hard links are
    still one restore point, by inode)."""
    if manifest.legacy or not manifest.databases:
        return None
    key = [
        manifest.backup_name,
        manifest.sequence,
        manifest.created_at.isoformat(),
        sorted((db, entry.sha256) for db, entry in manifest.databases.items()),
    ]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]


def _restore_points(group: Sequence[ArchiveInfo]) -> dict[int, list[ArchiveInfo]]:
    """id(representative) -> every name of that restore point, the representative first: the
    name its metadata records (not a link, copy or rename), else the oldest by ``newness``.
    Names sharing an inode or a restore_point_id are one point (joined transitively)."""
    parent = list(range(len(group)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[object, int] = {}
    for i, archive in enumerate(group):
        keys: list[object] = []
        if archive.file_id is not None:
            keys.append(("inode", archive.file_id))
        if archive.restore_point is not None:
            keys.append(("content", archive.restore_point))
        for key in keys:
            j = first.setdefault(key, i)
            parent[root(i)] = root(j)
    members: dict[int, list[ArchiveInfo]] = {}
    for i, archive in enumerate(group):
        members.setdefault(root(i), []).append(archive)
    points: dict[int, list[ArchiveInfo]] = {}
    for same in members.values():
        same.sort(key=lambda a: (a.copy_of is not None, a.newness))
        points[id(same[0])] = same
    return points


def _anchor(
    group: Sequence[ArchiveInfo], good: Callable[[ArchiveInfo], bool] | None
) -> tuple[ArchiveInfo | None, list[ArchiveInfo]]:
    """The newest verified archive that is good (newest first), and the ones rejected on the
    way; every verified archive may be tried when none passes."""
    rejected: list[ArchiveInfo] = []
    for archive in group:
        if archive.status is not ArchiveStatus.VERIFIED:
            continue
        if good is None or good(archive):
            return archive, rejected
        rejected.append(archive)
    return None, rejected


def delete_archives(archives: Sequence[ArchiveInfo]) -> PruneResult:
    """Delete each archive unless a verify or restore is reading it (it holds a shared flock)."""
    result = PruneResult()
    dirs: set[Path] = set()
    for archive in archives:
        try:
            fd = os.open(archive.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            continue
        except OSError as exc:
            result.failed.append((archive, exc.strerror or str(exc)))
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            archive.path.unlink()
            result.deleted.append(archive)
            dirs.add(archive.path.parent)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                result.skipped_busy.append(archive)
            else:
                result.failed.append((archive, exc.strerror or str(exc)))
        finally:
            os.close(fd)
    for directory in dirs:
        fsync_dir(directory)
    return result
