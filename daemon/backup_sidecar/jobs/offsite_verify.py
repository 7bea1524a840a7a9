"""The offsite verify: the newest confirmed copy of each policy downloaded into a temporary
directory (never the backup directory), checked against its record, decrypted, and read by
the archiver's full verify (every member's SHA-256, `integrity_check`), so an unreadable
bucket is found before a restore needs it.

A copy's policy and order come from the origin its checksum record carries (see
offsite_prune.py); a copy without one is taken for the policy its name starts with, ordered
by the store's upload time. An encrypted copy needs `offsite.encryption.identity_file`:
without one the verify of that copy is `skipped`, said as such, never passed silently. Every
failure is one outcome with a bounded `reason` (the metric's label) and a one-line error
naming the object; nothing stops the other policies' verifies.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from backup_sidecar import archiver, offsite
from backup_sidecar.errors import CorruptArchiveError, OffsiteObjectNotFoundError, SidecarError
from backup_sidecar.jobs.offsite import archive_name, open_store
from backup_sidecar.jobs.offsite_candidates import candidate_name, page_candidates
from backup_sidecar.jobs.offsite_order import copy_order
from backup_sidecar.jobs.offsite_ours import Ours
from backup_sidecar.jobs.offsite_pageverify import PageCopyFound, check_page_copy, find_page_copy
from backup_sidecar.jobs.offsite_pick import restore_candidates
from backup_sidecar.jobs.offsitecopy import origin_mismatch
from backup_sidecar.jobs.runtime import OffsiteSpec
from backup_sidecar.offsite.pagekeys import parse_page_name

log = structlog.get_logger(__name__)

OK, FAILED, SKIPPED = "ok", "failed", "skipped"
_TEMP_PREFIX = "backup-sidecar-offsite-verify-"
_NO_RECORD = "no checksum record"
NO_IDENTITY = (
    "the copy is encrypted and offsite.encryption.identity_file is not set: "
    "offsite copies cannot be verified without the identity"
)


@dataclass(frozen=True)
class CopyVerified:
    """One offsite copy's verify: ``result`` ok, failed or skipped; ``reason`` the failure's
    metric label; ``error`` one line naming the object."""

    policy: str
    object: str
    result: str
    reason: str | None = None
    error: str | None = None
    databases: tuple[str, ...] = ()


def verify_failure_reason(exc: BaseException) -> str:
    """The `reason` label of ``backup_sidecar_offsite_verify_failures_total``."""
    if isinstance(exc, CorruptArchiveError):
        return "damaged"
    name = type(exc).__name__
    for word, reason in (
        ("Unavailable", "unavailable"),
        ("NotFound", "missing"),
        ("Request", "refused"),
        ("Corrupt", "corrupt"),
        ("Decrypt", "decrypt"),
        ("Key", "key"),
    ):
        if word in name:
            return reason
    return "local" if isinstance(exc, OSError) else "other"


def policy_of(obj: offsite.OffsiteObject) -> str:
    """The policy the copy's record names; else the one its default name starts with."""
    if obj.record is not None and obj.record.origin is not None:
        return obj.record.origin.policy
    head, sep, _ = (archive_name(obj.name) or "").partition("_")
    return head if sep and head else "manual"


def newest_per_policy(
    objects: Sequence[offsite.OffsiteObject],
) -> dict[str, offsite.OffsiteObject]:
    """Each policy's newest copy, an archive's or an incremental backup's manifest object
    (``copy_order``: by its origin, else its upload time) among those
    with a checksum record: a newest copy damaged since its upload (no longer confirmed) is
    the one verified, and fails, rather than hidden behind an older good one. An object
    without a record is an unfinished upload, not a copy."""
    newest: dict[str, offsite.OffsiteObject] = {}
    for obj in objects:
        if candidate_name(obj.name) is None or obj.reason.startswith(_NO_RECORD):
            continue
        policy = policy_of(obj)
        if policy not in newest or copy_order(obj) > copy_order(newest[policy]):
            newest[policy] = obj
    return dict(sorted(newest.items()))


def verify_copy(
    store: offsite.Store,
    obj: offsite.OffsiteObject,
    *,
    identity_file: Path | None,
    temp_root: Path | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> CopyVerified:
    """Download ``obj`` into a fresh temporary directory and verify it completely."""
    policy = policy_of(obj)
    if not obj.confirmed:
        return CopyVerified(policy, obj.name, FAILED, "corrupt", f"{obj.name}: {obj.reason}")
    if obj.encrypted and identity_file is None:
        return CopyVerified(policy, obj.name, SKIPPED, error=NO_IDENTITY)
    local = archive_name(obj.name)
    assert local is not None
    try:
        identities: Sequence[Any] = ()
        if obj.encrypted and identity_file is not None:
            identities = offsite.load_identities(identity_file)
        source = str(identity_file) if identity_file is not None else "(none needed)"
        with tempfile.TemporaryDirectory(prefix=_TEMP_PREFIX, dir=temp_root) as tmp:
            dest = Path(tmp) / f"{local}{archiver.ARCHIVE_SUFFIX}"
            store.download(
                obj.name, dest, identities=identities, identity_source=source, cancel=should_stop
            )
            staging = Path(tmp) / "staging"
            staging.mkdir()
            verified = archiver.verify_archive(dest, staging=staging, should_stop=should_stop)
    except (SidecarError, OSError) as exc:
        return CopyVerified(policy, obj.name, FAILED, verify_failure_reason(exc), str(exc))
    mismatch = origin_mismatch(obj, verified)
    if mismatch is not None:
        return CopyVerified(policy, obj.name, FAILED, "damaged", f"{obj.name}: {mismatch}")
    return CopyVerified(policy, obj.name, OK, databases=tuple(verified.manifest.members()))


def select_copies(
    store: offsite.Store,
    ref: str | None = None,
    *,
    latest: bool = False,
    encrypted_only: bool = False,
    ours: Ours | None = None,
) -> list[offsite.OffsiteObject]:
    """What a verify reads: the copy named ``ref`` (``NAME``, ``NAME.tar.gz`` or its ``.age``
    object), the ``latest`` one, or by default the newest of each policy. The latest is the
    copy `restore --latest --from-offsite` tries first: the newest confirmed copy that is
    ``ours`` (the configured policies and their database sets: jobs/offsite_ours.py) by origin
    (``copy_order``, jobs/offsite_order.py, as here); when none is confirmed, the newest of
    ours with a record, which then fails saying why. By default a copy of a configured policy
    that is not ours (another sidecar's database set) is never taken for that policy's newest."""
    ours = ours or Ours(frozenset(), ())
    objects = store.list(encrypted_only=encrypted_only).objects
    if ref is not None:
        stem = ref.removesuffix(".age").removesuffix(archiver.ARCHIVE_SUFFIX)
        archiver.validate_name(stem)
        wanted = f"{stem}{archiver.ARCHIVE_SUFFIX}"
        found = [o for o in objects if o.name in (wanted, wanted + ".age")]
        if not found:
            raise OffsiteObjectNotFoundError(store.url, wanted)
        return [max(found, key=lambda o: (o.confirmed, o.encrypted))]
    if latest:  # archives and incremental backups (one manifest object each), as restore
        objects += page_candidates(store, encrypted_only=encrypted_only)
        recorded = [o for o in objects if not o.reason.startswith(_NO_RECORD)]
        first = restore_candidates(recorded, ours) or restore_candidates(
            recorded, ours, confirmed=False
        )
        return first[:1]
    pages = page_candidates(store, encrypted_only=encrypted_only)  # incremental backups too
    mine = [
        o
        for o in (*objects, *pages)
        if policy_of(o) not in ours.policies or ours.origin(o) is not False
    ]
    return list(newest_per_policy(mine).values())


def verify_offsite(
    spec: OffsiteSpec,
    *,
    environ: Mapping[str, str],
    store: offsite.Store | None = None,
    temp_root: Path | None = None,
    ref: str | None = None,
    latest: bool = False,
    ours: Ours | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> list[CopyVerified]:
    """Verify the newest copy of every policy the store holds (or ``ref``, or the ``latest``:
    see `select_copies`, ``ours`` the configured policies and sets); listing errors raise:
    nothing could be verified."""
    store = store or open_store(spec, environ=environ)
    outcomes = []
    encrypted_only = bool(spec.recipients)  # a plaintext copy is refused, as by restore
    try:
        chosen = select_copies(store, ref, latest=latest, encrypted_only=encrypted_only, ours=ours)
    except OffsiteObjectNotFoundError as missing:
        if ref is None:
            raise
        try:  # not an archive: an incremental backup of that name, if any
            found = find_page_copy(store, ref, encrypted_only=encrypted_only)
        except OffsiteObjectNotFoundError:
            raise missing from None
        done = _verify_pages(store, found, spec, temp_root=temp_root, should_stop=should_stop)
        _log(done)
        return [done]
    for obj in chosen:
        if should_stop():  # the daemon is stopping: what was not verified is not reported
            break
        page = parse_page_name(obj.name)  # --latest: the newest may be an incremental backup
        if page is not None and page.backup is not None:
            found = find_page_copy(store, page.backup, encrypted_only=encrypted_only)
            done = _verify_pages(store, found, spec, temp_root=temp_root, should_stop=should_stop)
        else:
            done = verify_copy(
                store,
                obj,
                identity_file=spec.identity_file,
                temp_root=temp_root,
                should_stop=should_stop,
            )
        if should_stop():
            break
        outcomes.append(done)
        _log(done)
    return outcomes


def _log(done: CopyVerified) -> None:
    if done.result == FAILED:
        log.error(
            "offsite_verify_failed", object=done.object, policy=done.policy,
            reason=done.reason, error=done.error,
        )  # fmt: skip
    elif done.result == OK:
        log.info("offsite_verified", object=done.object, policy=done.policy)


def _verify_pages(
    store: offsite.Store,
    found: PageCopyFound,
    spec: OffsiteSpec,
    *,
    temp_root: Path | None,
    should_stop: Callable[[], bool],
) -> CopyVerified:
    """An incremental backup's verify (jobs/offsite_pageverify.py), reported as a copy's."""
    if found.encrypted and spec.identity_file is None:
        return CopyVerified(found.policy, found.object, SKIPPED, error=NO_IDENTITY)
    try:
        databases = check_page_copy(
            store,
            found,
            identity_file=spec.identity_file,
            encrypted_only=bool(spec.recipients),
            temp_root=temp_root,
            should_stop=should_stop,
        )
    except (SidecarError, OSError) as exc:
        reason = verify_failure_reason(exc)
        return CopyVerified(found.policy, found.object, FAILED, reason, str(exc))
    return CopyVerified(found.policy, found.object, OK, databases=databases)
