"""The exception hierarchy: every failure the sidecar reports, each building its own message.

A leaf module: it imports nothing from the project, so the archiver and the daemon both use it.
The CLI maps these to exit codes once (usage and configuration errors 2, everything else 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final, Generic, TypeVar

_CommittedT = TypeVar("_CommittedT")


class SidecarError(Exception):
    """Base of every error the sidecar raises on purpose; its message is one line for the user."""


class UsageError(SidecarError, ValueError):
    """Bad input from the caller (exit 2): a bad name, an unknown database, conflicting flags."""


class ConfigError(UsageError):
    """An invalid configuration file or environment value, naming the file and the key path."""

    def __init__(self, source: str, key_path: str, reason: str) -> None:
        where = f"{source}: {key_path}" if key_path else source
        super().__init__(f"{where}: {reason}")
        self.source = source
        self.key_path = key_path
        self.reason = reason


class InvalidArchiveNameError(UsageError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"invalid archive name {name!r}: use 1-128 of A-Z a-z 0-9 . _ - starting with a "
            "letter or digit"
        )
        self.name = name


class UnknownDatabaseError(UsageError, LookupError):
    def __init__(self, name: str, known: list[str] | tuple[str, ...] = ()) -> None:
        hint = f" (known: {', '.join(sorted(known))})" if known else ""
        super().__init__(f"unknown database {name!r}{hint}")
        self.name = name


class UnknownPolicyError(UsageError, LookupError):
    """A backup asked for under a policy it may not use: one that is not configured (its
    archives would never be pruned) or ``pre_restore`` (written only by restores)."""

    def __init__(self, name: str, known: list[str] | tuple[str, ...]) -> None:
        why = "is written only by restores" if name == "pre_restore" else "is not a policy"
        super().__init__(f"backup policy {name!r} {why} (known: {', '.join(known) or 'none'})")
        self.name = name
        self.known = tuple(known)


class UnknownPrunePolicyError(UsageError, LookupError):
    """A prune asked for under a name that is neither a configured policy nor the policy of any
    archive in the backup directory (a removed policy's archives can still be pruned)."""

    def __init__(self, name: str, known: list[str] | tuple[str, ...]) -> None:
        super().__init__(
            f"cannot prune policy {name!r}: it is not configured and no archive has it "
            f"(known: {', '.join(known) or 'none'})"
        )
        self.name = name
        self.known = tuple(known)


class ArchiveError(SidecarError):
    """Something is wrong with an archive or with finding one."""


class ArchiveNotFoundError(ArchiveError, LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no archive named {name!r}")
        self.name = name


class ArchiveExistsError(ArchiveError, FileExistsError):
    def __init__(self, path: Path) -> None:
        super().__init__(
            f"archive {path.name!r} already exists in {path.parent}; names are never reused"
        )
        self.path = path


class BackupNameTakenError(ArchiveExistsError):
    """A name the other kind of backup holds: an archive and an incremental backup never share
    one (``list``, ``verify NAME`` and ``restore NAME`` would reach only one of them)."""

    def __init__(self, backup_dir: Path, name: str, *, holder: str) -> None:
        ArchiveError.__init__(
            self,
            f"backup name {name!r} is taken by {holder} in {backup_dir}; names are never "
            "reused, by archives and incremental backups alike",
        )
        self.path = backup_dir / f"{name}.tar.gz"


class ArchiveLinkError(ArchiveError):
    """An archive path that is a symbolic link: archives are never read through one (a link
    named like an archive could point at /etc/shadow, a live database, an archive elsewhere)."""

    def __init__(self, path: Path, target: str) -> None:
        super().__init__(
            f"archive {path} is a symbolic link (to {target}); archives are never read through "
            "a link: give the path of the archive itself"
        )
        self.path = path
        self.target = target


class CorruptArchiveError(ArchiveError, ValueError):
    """The archive failed verification; the message names the archive and the fault."""

    def __init__(self, archive: str, fault: str) -> None:
        super().__init__(f"archive {archive!r} is corrupt: {fault}")
        self.archive = archive
        self.fault = fault


class ArchiveTooLargeError(ArchiveError):
    """A backup would write what verify refuses (over a reader's limit); nothing is published."""

    def __init__(self, archive: str, what: str, size: int, limit: int) -> None:
        super().__init__(
            f"backup {archive!r} refused: its {what} would be {size} bytes, over the limit of "
            f"{limit} bytes that verify and restore accept; nothing was written"
        )
        self.archive = archive
        self.what = what
        self.size = size
        self.limit = limit


class DatabaseError(SidecarError):
    """A source or live database cannot be used as asked."""

    def __init__(self, name: str, path: Path, reason: str) -> None:
        super().__init__(f"database {name!r} ({path}): {reason}")
        self.name = name
        self.path = path
        self.reason = reason


class DatabaseLockedError(DatabaseError, TimeoutError):
    def __init__(self, name: str, path: Path, timeout: float) -> None:
        super().__init__(name, path, f"still locked by another connection after {timeout:g}s")
        self.timeout = timeout


class IntegrityCheckError(DatabaseError):
    def __init__(self, name: str, path: Path, result: str) -> None:
        super().__init__(name, path, f"integrity_check failed: {result}")
        self.result = result


class BackupDirError(SidecarError, OSError):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"backup directory {path}: {reason}")
        self.path = path
        self.reason = reason


class UnsafeEntryError(BackupDirError):
    """An entry inside the backup directory that the sidecar would have to follow or share: a
    symbolic link, a hard-linked or foreign-owned file, something of the wrong kind."""

    def __init__(self, entry: Path, reason: str) -> None:
        super(BackupDirError, self).__init__(
            f"backup directory entry {entry} {reason}; refusing to use it (the sidecar never "
            "follows links or shares files inside the backup directory: remove or fix it)",
        )
        self.path = entry
        self.reason = reason


class InsufficientSpaceError(SidecarError, OSError):
    def __init__(self, path: Path, needed: int, free: int, what: str) -> None:
        super().__init__(
            f"not enough free space in {path} for {what}: need {needed} bytes, {free} free"
        )
        self.path = path
        self.needed = needed
        self.free = free


class BusyError(SidecarError):
    """Another backup, restore or prune holds the database."""

    def __init__(self, database: str) -> None:
        super().__init__(f"database {database!r} is busy with another backup, restore or prune")
        self.database = database


class RestoreRefusedError(SidecarError):
    """A restore was refused before anything changed."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"restore refused: {reason}")
        self.reason = reason


class RestoreIncompleteError(SidecarError):
    """A restore wrote some databases and then failed: says which, and how to undo them."""

    def __init__(
        self,
        *,
        restored: Sequence[str],
        reason: str,
        pre_restore_archive: str | None,
        rescue: Path | None,
    ) -> None:
        done = ", ".join(restored) if restored else "nothing"
        if pre_restore_archive:
            undo = f"; to undo, restore {pre_restore_archive}"
        elif rescue is not None:
            undo = f"; the content they held before is kept in {rescue}"
        else:
            undo = ""
        super().__init__(f"restore incomplete: restored {done}, then {reason}{undo}")
        self.restored = tuple(restored)
        self.reason = reason
        self.pre_restore_archive = pre_restore_archive
        self.rescue = rescue


class OffsiteRestoreIncompleteError(RestoreIncompleteError):
    """`restore --latest --from-offsite` restored the databases of some copies, then the
    restore from the next one failed: says what came from which archive, and every
    pre_restore archive that undoes it."""

    def __init__(
        self,
        *,
        restored: Sequence[tuple[str, str]],
        failed: tuple[str, Sequence[str]],
        reason: str,
        pre_restore_archives: Sequence[str],
        rescue: Path | None,
    ) -> None:
        done = ", ".join(f"{db} from {archive}" for db, archive in restored) or "nothing"
        archive, names = failed
        if pre_restore_archives:
            undo = f"; to undo, restore {' and '.join(pre_restore_archives)}"
        elif rescue is not None:
            undo = f"; the content they held before is kept in {rescue}"
        else:
            undo = ""
        SidecarError.__init__(
            self,
            f"restore incomplete: restored {done}, then the restore of {', '.join(names)} "
            f"from {archive} failed: {reason}{undo}",
        )
        self.restored = tuple(db for db, _ in restored)
        self.sources = dict(restored)
        self.failed_archive = archive
        self.reason = reason
        self.pre_restore_archives = tuple(pre_restore_archives)
        self.pre_restore_archive = pre_restore_archives[-1] if pre_restore_archives else None
        self.rescue = rescue


class OperationAbortedError(SidecarError):
    """A running operation was cancelled (the shutdown grace time ran out); nothing is
    left half-done."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} aborted before completion; nothing was changed")
        self.what = what


class MemberNameError(UsageError):
    """A database's file name cannot be a member of an archive (or two databases share one)."""

    def __init__(self, database: str, member: str, reason: str) -> None:
        super().__init__(f"database {database!r}: member name {member!r} {reason}")
        self.database = database
        self.member = member
        self.reason = reason


class MetadataRefusedError(ArchiveError):
    """The metadata a backup wrote would not be read back: nothing was published."""

    def __init__(self, archive: str, reason: str) -> None:
        super().__init__(f"backup {archive!r} not published: its metadata is unreadable: {reason}")
        self.archive = archive
        self.reason = reason


# --- settings and appdata (configuration key paths, the app databases, the arrow import) ---


class KeyedValueError(ValueError):
    """A cross-field refusal that knows the key path below the model it was raised in."""

    def __init__(self, key_path: str, reason: str) -> None:
        super().__init__(f"{key_path}: {reason}")
        self.key_path = key_path
        self.reason = reason


class DatabaseExistsError(SidecarError, FileExistsError):
    """A database was to be created where a file already is; the existing file is left alone."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"database {path} already exists; an existing database is never replaced")
        self.path = path


class ArrowDataError(UsageError):
    """A scraper JSON file that cannot be imported; nothing from it is written."""

    def __init__(self, source: str, key_path: str, reason: str) -> None:
        shown = source if source.isprintable() else repr(source)  # a newline in a file name
        where = f"{shown}: {key_path}" if key_path else shown
        super().__init__(f"{where}: {reason}")
        self.source = source
        self.key_path = key_path
        self.reason = reason


# --- the archiver (malformed archive bytes, reported per archive; its copies and live writes) ---


class GzipFormatError(ValueError):
    """The bytes are not one or more complete, valid gzip members."""


class OutputLimitError(GzipFormatError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"expands past the limit of {limit} bytes")
        self.limit = limit


class TarFormatError(ValueError):
    """The tar stream breaks the rules this archive format allows."""


class ManifestError(ValueError):
    """The metadata member is unreadable or breaks the contract; the message says which key."""


class LockDeadlineError(Exception):
    """A one-step copy gave up: the database stayed locked past its deadline."""


class StopRequestedError(Exception):
    """A one-step copy gave up: the caller asked it to stop."""


class WriteIncompleteError(Exception, Generic[_CommittedT]):
    """Some databases were committed, then another's commit failed; ``committed`` holds what
    each committed write replaced (the live writer's saved content)."""

    def __init__(
        self,
        committed: Sequence[_CommittedT],
        failed: str,
        cause: BaseException,
    ) -> None:
        super().__init__(f"{failed}: {cause}")
        self.committed = tuple(committed)
        self.failed = failed
        self.cause = cause


# --- Offsite copies (backup_sidecar.offsite): the object store, its checksums, age, the lease ---


class OffsiteError(SidecarError):
    """Something failed between the sidecar and its offsite store (a bucket or a directory)."""


class OffsiteUrlError(UsageError):
    """An offsite URL that is neither ``s3://BUCKET[/PREFIX]`` nor ``file:///PATH``."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"offsite url {url!r}: {reason}")
        self.url = url
        self.reason = reason


class OffsiteCredentialsError(UsageError):
    """Credentials for an ``s3://`` store that cannot be used (the message never holds a secret)."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"offsite credentials from {source}: {reason}")
        self.source = source
        self.reason = reason


class OffsiteUnavailableError(OffsiteError, ConnectionError):
    """The store did not answer (or answered with a server error) through every retry."""

    def __init__(self, url: str, operation: str, attempts: int, cause: str) -> None:
        super().__init__(
            f"offsite store {url} unavailable: {operation} failed {attempts} time(s); last: {cause}"
        )
        self.url = url
        self.operation = operation
        self.attempts = attempts
        self.cause = cause


class OffsiteRequestError(OffsiteError):
    """The store refused a request in a way a retry cannot fix (permission, bad bucket)."""

    def __init__(self, url: str, operation: str, cause: str) -> None:
        super().__init__(f"offsite store {url}: {operation} refused: {cause}")
        self.url = url
        self.operation = operation
        self.cause = cause


class OffsiteObjectNotFoundError(OffsiteError, LookupError):
    def __init__(self, url: str, name: str) -> None:
        super().__init__(f"no offsite object named {name!r} in {url}")
        self.url = url
        self.name = name


class OffsiteNothingToRestoreError(OffsiteError, LookupError):
    """``restore --latest --from-offsite`` on a store that holds no confirmed archive of the
    configured policies."""

    def __init__(self, url: str) -> None:
        super().__init__(f"no confirmed archive of the configured policies in {url} to restore")
        self.url = url


class OffsiteNoUsableCopyError(OffsiteError, LookupError):
    """``restore --latest --from-offsite`` tried every confirmed copy, newest first, and none
    downloaded and verified; nothing was written."""

    def __init__(self, url: str, tried: Sequence[tuple[str, str]]) -> None:
        last = f" (the oldest, {tried[-1][0]!r}: {tried[-1][1]})" if tried else ""
        super().__init__(
            f"no confirmed archive in {url} downloaded and verified: {len(tried)} tried, "
            f"each refused{last}; nothing was written"
        )
        self.url = url
        self.tried = tuple(tried)


class OffsiteDatabaseNotFoundError(OffsiteError, LookupError):
    """`restore --latest --from-offsite`: no usable confirmed copy holds a database asked for
    (``pre_restore`` copies are never used); no live database was changed."""

    def __init__(self, url: str, databases: Sequence[str]) -> None:
        super().__init__(
            f"no usable confirmed archive in {url} holds {', '.join(databases)} "
            "(pre_restore archives are never used); no database was restored"
        )
        self.url = url
        self.databases = tuple(databases)


class OffsiteCopiesUnusableError(OffsiteError, LookupError):
    """`init --restore-from-offsite`: the store holds archives of the configured policies for
    databases that need content, but no usable confirmed copy holds them; nothing was created
    (an empty database in place of what offsite holds would hide the loss)."""

    def __init__(self, url: str, databases: Sequence[str], skipped: int) -> None:
        super().__init__(
            f"{url} holds archives of the configured policies for {', '.join(databases)}, "
            f"but no usable confirmed copy holds them ({skipped} passed over; see list "
            "--offsite): nothing was created or restored"
        )
        self.url = url
        self.databases = tuple(databases)


class OffsiteNotRestoredError(OffsiteError):
    """`restore --latest --from-offsite`: the others were restored, but no usable confirmed
    copy holds these configured databases (exit 3)."""

    def __init__(self, url: str, databases: Sequence[str]) -> None:
        super().__init__(
            f"no usable confirmed archive in {url} holds {', '.join(databases)}: not restored "
            "(the other databases were)"
        )
        self.url = url
        self.databases = tuple(databases)


class OffsiteLocalCopyError(ArchiveError, FileExistsError):
    """An archive fetched from offsite whose name the backup directory already holds as another
    file (different bytes, or damaged): the local file is kept as it is, never overwritten."""

    def __init__(self, path: Path, object_name: str, why: str) -> None:
        super().__init__(
            f"archive {path.name!r} already exists in {path.parent} and {why}, unlike the "
            f"verified offsite copy {object_name!r}; the local file is kept as it is: move it "
            "out of the backup directory to restore the offsite copy"
        )
        self.path = path
        self.object_name = object_name
        self.why = why


class OffsiteObjectCorruptError(OffsiteError, ValueError):
    """An offsite object that is not what was uploaded (truncated, swapped, tampered, or without
    its checksum record); nothing was written locally."""

    def __init__(self, name: str, fault: str) -> None:
        super().__init__(f"offsite object {name!r} refused: {fault}; nothing was written")
        self.name = name
        self.fault = fault


class OffsiteUnsafeEntryError(OffsiteError):
    """An entry inside a ``file://`` store that is a symbolic link (or not a regular file or
    directory where one is expected): never followed, so nothing outside the store is read or
    written through it."""

    def __init__(self, url: str, key: str, reason: str) -> None:
        super().__init__(f"offsite store {url}: {key} {reason}; refused")
        self.url = url
        self.key = key
        self.reason = reason


class OffsitePlaintextError(OffsiteError):
    """A plaintext object in a store the config encrypts to (it was not uploaded by this
    config: anyone who can write to the store could have planted it with a forged record)."""

    def __init__(self, url: str, name: str) -> None:
        super().__init__(
            f"offsite object {name!r} in {url} is plaintext but offsite.encryption.recipients "
            "is set: refused (to restore it anyway, remove offsite.encryption from the config "
            "for that restore); nothing was written"
        )
        self.url = url
        self.name = name


class OffsiteKeyError(UsageError):
    """An age recipient or identity (file) that cannot be read or parsed."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"age key {source}: {reason}")
        self.source = source
        self.reason = reason


class OffsiteDecryptError(OffsiteError):
    """An encrypted object that the identity cannot open: a wrong, missing or partial identity."""

    def __init__(self, name: str, identity: str, reason: str) -> None:
        super().__init__(
            f"cannot decrypt offsite object {name!r} with identity {identity}: {reason}; "
            "nothing was written"
        )
        self.name = name
        self.identity = identity
        self.reason = reason


class OffsiteLeaseHeldError(OffsiteError):
    """Another sidecar holds the prefix's lease: this one stays read-only there."""

    def __init__(self, url: str, holder: str, expires_in: float) -> None:
        super().__init__(
            f"offsite prefix {url} is held by {holder} (lease valid for {expires_in:.0f}s more "
            "unless renewed); this sidecar stays read-only there"
            if expires_in > 0
            else f"offsite prefix {url}: this sidecar does not hold its lease ({holder}); "
            "it stays read-only there until it takes the lease"
        )
        self.url = url
        self.holder = holder
        self.expires_in = expires_in


class OffsiteLeaseLostError(OffsiteError):
    """The lease this sidecar held was taken over (it expired before a renewal reached the store);
    it stops writing to the prefix at once."""

    def __init__(self, url: str, holder: str) -> None:
        super().__init__(
            f"offsite lease on {url} lost to {holder}; this sidecar stopped writing there"
        )
        self.url = url
        self.holder = holder


class OffsiteUploadAbandonedError(OffsiteError):
    """An upload stopped on purpose (the daemon is stopping): nothing was confirmed and its
    unfinished parts were aborted; the archive stays pending for the next sidecar."""

    def __init__(self, url: str, name: str) -> None:
        super().__init__(f"offsite upload of {name!r} to {url} abandoned: the sidecar is stopping")
        self.url = url
        self.name = name


class OffsiteDownloadAbandonedError(OffsiteError):
    """A download stopped on purpose (the daemon is stopping), however stalled the endpoint:
    nothing was published and nothing live was touched."""

    def __init__(self, url: str, name: str) -> None:
        super().__init__(
            f"offsite download of {name!r} from {url} abandoned: the sidecar is stopping"
        )
        self.url = url
        self.name = name


# Raised and caught inside offsite/, each turned into one of the errors above.


class RecordError(ValueError):
    """A checksum record that cannot be read; the message says why, in one line."""


class ObjectChangedError(Exception):
    """The object's ETag is no longer the one asked for: it was replaced."""


class S3RequestFailedError(ConnectionError):
    """A non-2xx answer (or an unreadable one): ``status`` 0 when the body was unreadable."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}" if status else detail)
        self.status = status


# --- the page store (page-level incremental backups: packs of pages, one manifest a backup) ---


class PageStoreError(SidecarError):
    """Something is wrong with the page store or with one of its backups."""


class PageStoreBusyError(PageStoreError, TimeoutError):
    def __init__(self, store: Path, waited_s: float) -> None:
        super().__init__(
            f"page store {store}: still locked by another operation after {waited_s:g}s"
        )
        self.store = store
        self.waited_s = waited_s


class PageBackupNameError(PageStoreError, ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"invalid page backup name {name!r}: use 1-128 of A-Z a-z 0-9 . _ - starting with a "
            "letter or digit"
        )
        self.name = name


class PageBackupNotFoundError(PageStoreError, LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no page backup named {name!r}")
        self.name = name


class PageBackupExistsError(PageStoreError, FileExistsError):
    def __init__(self, name: str) -> None:
        super().__init__(f"page backup {name!r} already exists; it is never overwritten")
        self.name = name


class PageReadError(PageStoreError):
    """The live database's pages cannot be read (locked, not a database, no dbpage table)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"database {path}: cannot read its pages: {reason}")
        self.path = path
        self.reason = reason


class ManifestFormatError(PageStoreError, ValueError):
    """A manifest's bytes are unreadable or break the format; the reason names the key."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"page backup {name!r}: manifest is malformed: {reason}")
        self.name = name
        self.reason = reason


class PackFormatError(PageStoreError, ValueError):
    """A pack file is truncated or damaged: its footer, index or one compressed frame."""

    def __init__(self, pack: str, reason: str) -> None:
        super().__init__(f"pack {pack!r} is damaged: {reason}")
        self.pack = pack
        self.reason = reason


class PageMismatchError(PageStoreError, ValueError):
    """A backup's page cannot be rebuilt as recorded: missing pack, damage, wrong content."""

    def __init__(self, backup: str, pgno: int, reason: str) -> None:
        super().__init__(f"page backup {backup!r}: page {pgno}: {reason}")
        self.backup = backup
        self.pgno = pgno
        self.reason = reason


class ImageMismatchError(PageStoreError, ValueError):
    def __init__(self, backup: str, expected: str, actual: str) -> None:
        super().__init__(
            f"page backup {backup!r}: the rebuilt image has SHA-256 {actual}, the manifest "
            f"records {expected}"
        )
        self.backup = backup
        self.expected = expected
        self.actual = actual


class GarbageCollectionRefusedError(PageStoreError):
    """A manifest cannot be read, so the packs it may need are unknown: nothing is swept."""

    def __init__(self, backup: str, reason: str) -> None:
        super().__init__(
            f"page store garbage collection refused: page backup {backup!r} cannot be read "
            f"({reason}); no pack was deleted"
        )
        self.backup = backup
        self.reason = reason


# --- the control socket (control/): a bad request line, the daemon's refusal, the connection ---


class ProtocolError(UsageError):
    """A request line that is not a valid request (code ``bad_request``); nothing was run."""

    code: Final = "bad_request"

    def __init__(self, reason: str, *, op: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        #: The request's op when it named one of the protocol's ops (None: unparseable or
        #: unknown), so a refusal is counted under a bounded set of labels.
        self.op = op


class ControlError(SidecarError):
    """The daemon answered a request with an error; ``code`` is one of the protocol's codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class DaemonNotRunningError(SidecarError, ConnectionError):
    """Nothing listens on the control socket: no socket file, or a stale one."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"no backup-sidecar daemon listening on {path}")
        self.path = path


class DaemonConnectionError(SidecarError, ConnectionError):
    """A daemon was reached but the exchange failed: denied, timed out, cut off or garbled."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"control socket {path}: {reason}")
        self.path = path
        self.reason = reason


class ControlSocketError(SidecarError, OSError):
    """The control socket cannot be created at its path; the path is left as it was."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"control socket {path}: {reason}")
        self.path = path
        self.reason = reason
