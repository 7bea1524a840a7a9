"""One offsite copy brought into the backup directory: downloaded into a locked staging area
(checked against its record, decrypted), verified there completely (the archiver's verify:
every CRC and SHA-256, ``integrity_check`` of every database), and only then linked into place.

A copy that fails any of that leaves nothing in the backup directory: the staging area goes
with it (and one abandoned by a killed process is removed by the next start, like any other).
When the name is already taken there, the local file is never replaced: it is used when it is
the same archive (its SHA-256 is the one the object's record says it was made from: then it is
verified in place of a download; or, for an older record without it, the SHA-256 of the
downloaded and verified copy), else the fetch is refused, saying whether the local file
differs or is damaged. A copy whose record's origin (policy, sequence) disagrees with the
archive's own metadata fails like a damaged one (``origin_mismatch``, the offsite verify's check).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backup_sidecar import archiver, offsite
from backup_sidecar.archiver.staging import publish
from backup_sidecar.errors import ArchiveExistsError, CorruptArchiveError, OffsiteLocalCopyError
from backup_sidecar.jobs.effort import Effort
from backup_sidecar.jobs.runtime import Runtime

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Skipped:
    """A confirmed offsite copy `restore --latest --from-offsite` passed over, and why."""

    object: str
    reason: str


@dataclass(frozen=True)
class Fetched:
    """An archive fetched from offsite: published into the backup directory, or found there
    already (``reused``: the same bytes as the offsite copy). ``size``: the bytes downloaded
    (0 when the local archive was used without a download). ``skipped``: the newer copies
    that failed to download or verify first (``--latest`` only), newest first."""

    archive: str
    object: str
    size: int
    decrypted: bool
    reused: bool = False
    skipped: tuple[Skipped, ...] = ()
    #: Local packs (``db/pack``) refused as unsound, fetched from offsite and put in place.
    mended: tuple[str, ...] = ()


def fetch_copy(
    rt: Runtime,
    store: offsite.Store,
    obj: offsite.OffsiteObject,
    archive: str,
    *,
    identities: Sequence[Any],
    identity_source: str,
    effort: Effort,
) -> Fetched:
    """Download ``obj`` (the archive ``archive``), verify it in staging, publish it as
    ``<archive>.tar.gz``; raises the library's download errors, CorruptArchiveError when the
    copy fails verify, OffsiteLocalCopyError when another file holds the name."""
    dest = rt.backup_dir / f"{archive}{archiver.ARCHIVE_SUFFIX}"
    if _recorded_here(dest, obj):  # the same archive already here: verified, not downloaded
        with archiver.staging_area(rt.backup_dir, purpose="verify") as scratch:
            verified = archiver.verify_archive(
                dest, staging=scratch, progress=effort.progress, should_stop=effort.should_stop
            )
        _refuse_mismatch(obj, verified, archive)
        return Fetched(archive=archive, object=obj.name, size=0, decrypted=False, reused=True)
    with archiver.staging_area(rt.backup_dir, purpose="offsite") as area:
        staged = area / dest.name
        got = store.download(
            obj.name,
            staged,
            identities=identities,
            identity_source=identity_source,
            encrypted_only=bool(rt.offsite and rt.offsite.recipients),  # plaintext: planted
            cancel=effort.should_stop,  # the daemon stops: even a stalled GET is left
        )
        with archiver.staging_area(rt.backup_dir, purpose="verify") as scratch:
            verified = archiver.verify_archive(
                staged, staging=scratch, progress=effort.progress, should_stop=effort.should_stop
            )
        _refuse_mismatch(obj, verified, archive)  # before it is published
        try:
            publish(staged, dest)
            reused = False
        except ArchiveExistsError:
            _same_or_refuse(dest, staged, obj.name)
            reused = True
    return Fetched(
        archive=archive, object=obj.name, size=got.size, decrypted=got.decrypted, reused=reused
    )


def archive_name(object_name: str) -> str | None:
    """The local archive name of an offsite object (``NAME.tar.gz`` or ``NAME.tar.gz.age``),
    None for an object that is not one."""
    local = object_name.removesuffix(".age")  # an encrypted object's suffix
    if not local.endswith(archiver.ARCHIVE_SUFFIX):
        return None
    try:
        return archiver.validate_name(local.removesuffix(archiver.ARCHIVE_SUFFIX))
    except ValueError:
        return None


def origin_mismatch(obj: offsite.OffsiteObject, verified: archiver.VerifiedArchive) -> str | None:
    """Why the archive is not the one its object's name and record describe (another backup's
    archive under this name, a copy swapped with its record, or a planted one with a hand-made
    record): the restore's fetch and the offsite verify both ask."""
    manifest = verified.manifest
    named = archive_name(obj.name)
    if named is not None and manifest.backup_name != named:
        return (
            f"the archive's metadata names backup {manifest.backup_name!r}, not {named!r} "
            "(another backup's archive under this name)"
        )
    origin = obj.record.origin if obj.record is not None else None
    if origin is None:
        return None
    if manifest.policy != origin.policy or manifest.sequence != origin.sequence:
        return (
            f"the archive's metadata says policy {manifest.policy!r} sequence "
            f"{manifest.sequence}, its checksum record {origin.policy!r} {origin.sequence}"
        )
    return None


def _refuse_mismatch(
    obj: offsite.OffsiteObject, verified: archiver.VerifiedArchive, archive: str
) -> None:
    mismatch = origin_mismatch(obj, verified)
    if mismatch is not None:
        raise CorruptArchiveError(archive, f"{obj.name}: {mismatch}")


def _recorded_here(local: Path, obj: offsite.OffsiteObject) -> bool:
    """Whether ``local`` exists and is the archive the object was made from: its SHA-256 is
    the record's ``source_sha256`` (absent from records older than it: then the copy is
    downloaded and compared instead). A forged record could only make the local file be
    used, which is verified like any other."""
    source = obj.record.source_sha256 if obj.record is not None else None
    if source is None or not (local.exists() or local.is_symlink()):
        return False
    try:
        return _sha256(local) == source
    except OSError:
        return False  # the download path says what is wrong with it


def _same_or_refuse(local: Path, verified: Path, object_name: str) -> None:
    """Return when ``local`` holds exactly the bytes of ``verified``; else OffsiteLocalCopyError
    saying how it differs. Nothing is written either way."""
    try:
        mine = _sha256(local)
    except OSError as exc:
        raise OffsiteLocalCopyError(
            local, object_name, f"cannot be read ({exc.strerror or exc})"
        ) from None
    theirs = _sha256(verified)
    if mine == theirs:
        return
    try:
        archiver.read_check(local)
    except CorruptArchiveError as exc:
        raise OffsiteLocalCopyError(local, object_name, f"is damaged ({exc.fault})") from None
    except OSError as exc:
        raise OffsiteLocalCopyError(
            local, object_name, f"cannot be read ({exc.strerror or exc})"
        ) from None
    raise OffsiteLocalCopyError(
        local, object_name, f"is another archive (sha256 {mine[:12]}…, not {theirs[:12]}…)"
    )


def _sha256(path: Path) -> str:
    """The SHA-256 of a regular file, never read through a link."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "not a regular file")
        digest = hashlib.sha256()
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
