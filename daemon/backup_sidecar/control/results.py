"""What the daemon answers to each op: one model per op, shared by the server and the client.

The service's handler builds them, the server encodes them, the client parses the daemon's
answer back into the same model (a malformed answer is one DaemonConnectionError there). Field
order is the order on the wire.
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)

from backup_sidecar.control.wire import describe
from backup_sidecar.errors import ProtocolError


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class PingResult(_Result):
    pong: Literal[True] = True
    pid: int
    version: str


class DatabaseCheck(_Result):
    """A database as the health watcher's last check saw it (None: not known yet)."""

    healthy: bool | None
    size_bytes: int | None
    wal_size_bytes: int | None
    page_count: int | None
    freelist_count: int | None
    error: str | None


class StatusResult(_Result):
    version: str
    healthy: bool
    #: Why the daemon is unhealthy (empty: healthy).
    reasons: list[str]
    #: What is not known yet (databases not checked yet): not a reason to be unhealthy.
    unknown: list[str]
    backup_dir: str
    #: Database name -> its live path.
    databases: dict[str, str]
    #: Policy -> its next scheduled run (ISO 8601), None when it never fires again.
    next_runs: dict[str, str | None]
    #: Database name -> its last check (empty before the first, and from older daemons).
    checks: dict[str, DatabaseCheck] = {}


class ArchiveEntry(_Result):
    """One archive as `list` shows it (the CLI's `list --json` too)."""

    name: str
    path: str
    created_at: str
    size_bytes: int
    databases: list[str]
    policy: str
    status: str
    verified: bool
    error: str | None
    sequence: int | None
    #: ``archive`` or ``incremental`` (the page store); the check it ran (``full``/``quick``).
    kind: str = "archive"
    check: str | None = None
    #: The backup the file's metadata names when that is not the file's own name (a link, copy
    #: or rename of that backup's archive, whose data it restores).
    copy_of: str | None = None


class ListResult(_Result):
    archives: list[ArchiveEntry]


class BackupResult(_Result):
    archive: str
    size_bytes: int
    databases: list[str]


class VerifyResult(_Result):
    archive: str
    path: str
    ok: Literal[True] = True
    legacy: bool
    databases: list[str]
    warnings: list[str]
    kind: str = "archive"


class ExportResult(_Result):
    archive: str
    path: str


class SkippedCopy(_Result):
    object: str
    reason: str


class OffsiteSource(_Result):
    """Where an archive fetched from offsite came from (``reused``: the local copy was it)."""

    object: str
    reused: bool
    skipped: list[SkippedCopy]


class ArchiveRestore(_Result):
    """One archive's restore within a ``"latest"`` restore from offsite."""

    archive: str
    dry_run: bool
    restored: list[str]
    pre_restore_archive: str | None
    damaged: list[str]
    plan: list[str]
    offsite: OffsiteSource
    copy_of: str | None = None


#: Present only in the answer to ``"from": "offsite", "latest": true``.
_LATEST_ONLY: Final = ("pre_restore_archives", "databases", "not_found", "skipped", "offsite",
                       "archives")  # fmt: skip


class RestoreResult(_Result):
    #: None only for a ``"latest"`` restore whose databases came from several archives.
    archive: str | None
    dry_run: bool
    restored: list[str]
    pre_restore_archive: str | None
    #: "name: reason" for each live database saved although damaged (dry run: would be).
    damaged: list[str]
    plan: list[str]
    #: The backup a copy's metadata names (its data was restored), None for an archive itself.
    copy_of: str | None = None
    #: ``"latest"`` from offsite: every pre_restore archive made, database -> archive, the
    #: databases no usable copy holds, the copies passed over, the one archive's source (None
    #: for several), and each archive's restore.
    pre_restore_archives: list[str] | None = None
    databases: dict[str, str] | None = None
    not_found: list[str] | None = None
    skipped: list[SkippedCopy] | None = None
    offsite: OffsiteSource | None = None
    archives: list[ArchiveRestore] | None = None

    @model_serializer(mode="wrap")
    def _drop_latest_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if self.archives is None:
            return {k: v for k, v in data.items() if k not in _LATEST_ONLY}
        return data


class DamagedArchive(_Result):
    archive: str
    reason: str


class KeptArchive(_Result):
    archive: str
    policy: str
    #: The rules that keep it: "last 3", "daily 2026-12-06", "within 7d", "newest verified".
    reasons: list[str]


class PruneResult(_Result):
    dry_run: bool
    deleted: list[str]
    skipped_busy: list[str]
    #: "name: reason" for each archive that could not be deleted, "page store 'db': reason"
    #: for each page store whose garbage collection failed.
    errors: list[str]
    #: Damaged archives: kept, not counted.
    damaged: list[DamagedArchive]
    #: Every other archive of the pruned policies that stays, and why (empty from a daemon
    #: older than GFS retention).
    kept: list[KeptArchive] = []


class ScrubResult(_Result):
    passed: list[str]
    damaged: list[DamagedArchive]
    #: Already damaged, or gone while the scrub ran.
    skipped: list[str]


class OffsiteCopy(_Result):
    """A policy's newest confirmed offsite copy."""

    object: str
    #: When it was confirmed, ISO 8601: the store's upload time, or this host's clock for an
    #: upload this daemon confirmed since it started.
    uploaded_at: str
    age_seconds: float


class ArchiveOffsiteCopy(_Result):
    """A local archive's copy offsite: ``confirmed``, ``pending`` (not uploaded yet),
    ``mismatched`` (an object of its name made from other bytes) or ``damaged`` (the offsite
    verify failed on it: ``detail`` says why)."""

    state: str
    object: str | None
    detail: str | None = None


class OffsiteStatusResult(_Result):
    """The offsite uploader as of its last pass (``configured`` false: no offsite section;
    the other fields are None until the first pass has told)."""

    configured: bool
    url: str | None
    #: The lease verdict: true when this sidecar may write (upload, prune) the prefix.
    writable: bool | None
    #: Who holds the lease when another sidecar does ("an unreadable lease" if unknown).
    holder: str | None
    #: Local verified archives not confirmed offsite.
    pending: int | None
    #: Policy -> its newest confirmed copy.
    newest: dict[str, OffsiteCopy]
    #: The last pass's failure (None once a pass succeeds), and when it happened.
    last_error: str | None
    last_error_at: str | None
    #: When the last pass ended (ISO 8601), None before the first.
    checked_at: str | None
    #: Each local archive the uploader keeps offsite (an archive not named: none, e.g. not
    #: verified or older than `offsite.keep` holds), as of the last pass and verify.
    copies: dict[str, ArchiveOffsiteCopy] = {}
    #: One line per policy whose offsite copies lag (as /healthz says).
    lagging: list[str] = []


Result: TypeAlias = (
    PingResult
    | StatusResult
    | ListResult
    | BackupResult
    | VerifyResult
    | ExportResult
    | RestoreResult
    | PruneResult
    | ScrubResult
    | OffsiteStatusResult
)
#: The model of each op's answer.
RESULT_TYPES: Final[dict[str, type[Result]]] = {
    "ping": PingResult,
    "status": StatusResult,
    "list": ListResult,
    "backup": BackupResult,
    "verify": VerifyResult,
    "export": ExportResult,
    "restore": RestoreResult,
    "prune": PruneResult,
    "scrub": ScrubResult,
    "offsite_status": OffsiteStatusResult,
}


def parse_result(op: str, data: object) -> Result:
    """The daemon's answer to ``op`` as its model; ProtocolError naming the fault if malformed."""
    try:
        return RESULT_TYPES[op].model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(
            f"bad {op} result: {describe(exc, tagged=False, whole='result')}"
        ) from None
