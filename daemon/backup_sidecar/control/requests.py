"""What a client may ask the daemon: one model per op, validated at the socket, the edge of the
system (pydantic refuses anything else; the server and the client never look at raw JSON)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal, TypeAlias

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from backup_sidecar import errors
from backup_sidecar.control.wire import describe, first_line, load_object
from backup_sidecar.errors import ProtocolError

ARCHIVE_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _archive_name(value: str) -> str:
    if "/" in value or "\\" in value or value.startswith("."):
        raise ValueError(f"archives are named, never given as paths: {value!r}")
    if not ARCHIVE_NAME_RE.fullmatch(value):
        raise errors.InvalidArchiveNameError(value)
    return value


def _some_databases(value: list[str] | None) -> list[str] | None:
    if value is not None and not value:
        raise ValueError("names no database (leave it out to mean every database)")
    return value


ArchiveName = Annotated[str, AfterValidator(_archive_name)]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128)]
#: An explicit database list; ``[]`` is refused, never read as "all" (leaving it out is "all").
DatabaseNames = Annotated[list[Identifier] | None, AfterValidator(_some_databases)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class PingRequest(_Request):
    op: Literal["ping"] = "ping"


class StatusRequest(_Request):
    op: Literal["status"] = "status"


class ListRequest(_Request):
    op: Literal["list"] = "list"


class BackupRequest(_Request):
    op: Literal["backup"] = "backup"
    policy: Identifier = "manual"
    databases: DatabaseNames = None
    wait: bool = False


class VerifyRequest(_Request):
    op: Literal["verify"] = "verify"
    archive: ArchiveName


def _absolute(value: str) -> str:
    if not value.startswith("/") or "\0" in value:
        raise ValueError(f"needs an absolute path on the daemon's side: {value!r}")
    return value


class ExportRequest(_Request):
    """Incremental backup ``archive`` written as the new standalone archive ``out`` (an
    absolute path as the daemon sees it; never replaced if it exists)."""

    op: Literal["export"] = "export"
    archive: ArchiveName
    out: Annotated[str, StringConstraints(max_length=4096), AfterValidator(_absolute)]


class RestoreRequest(_Request):
    """A restore from a local archive, or (``"from": "offsite"``) from the offsite store: the
    archive named, or the newest confirmed one with ``"latest": true``."""

    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=False)
    op: Literal["restore"] = "restore"
    archive: ArchiveName | None = None
    source: Literal["local", "offsite"] = Field("local", alias="from")
    latest: bool = False
    databases: DatabaseNames = None
    confirm: bool = False
    dry_run: bool = False
    wait: bool = False

    @model_validator(mode="after")
    def _one_archive(self) -> RestoreRequest:
        if self.latest and self.source != "offsite":
            raise ValueError('"latest" needs "from": "offsite"')
        if self.latest and self.archive is not None:
            raise ValueError('give "archive" or "latest", not both')
        if self.archive is None and not self.latest:
            raise ValueError('needs "archive" (or "from": "offsite" with "latest": true)')
        return self


class PruneRequest(_Request):
    op: Literal["prune"] = "prune"
    policy: Identifier | None = None
    dry_run: bool = False
    keep: Annotated[int, Field(ge=0)] | None = None


class ScrubRequest(_Request):
    op: Literal["scrub"] = "scrub"


class OffsiteStatusRequest(_Request):
    op: Literal["offsite_status"] = "offsite_status"


Request: TypeAlias = Annotated[
    PingRequest
    | StatusRequest
    | ListRequest
    | BackupRequest
    | VerifyRequest
    | ExportRequest
    | RestoreRequest
    | PruneRequest
    | ScrubRequest
    | OffsiteStatusRequest,
    Field(discriminator="op"),
]
REQUEST_TYPES: Final = (
    PingRequest,
    StatusRequest,
    ListRequest,
    BackupRequest,
    VerifyRequest,
    ExportRequest,
    RestoreRequest,
    PruneRequest,
    ScrubRequest,
    OffsiteStatusRequest,
)
OPS: Final = tuple(t.model_fields["op"].default for t in REQUEST_TYPES)
_REQUEST: TypeAdapter[Request] = TypeAdapter(Request)


def parse_request(data: Mapping[str, Any]) -> Request:
    """Validate an already-parsed request object; raise ProtocolError naming the fault."""
    op = data.get("op")
    if op is None:
        raise ProtocolError('a request needs an "op"')
    if op not in OPS:
        raise ProtocolError(f"unknown op {op!r} (expected one of: {', '.join(OPS)})")
    try:
        return _REQUEST.validate_python(dict(data))
    except ValidationError as exc:
        raise ProtocolError(f"bad {op} request: {describe(exc)}", op=op) from None
    except (ValueError, RecursionError, OverflowError) as exc:
        raise ProtocolError(f"bad {op} request: {first_line(exc)}", op=op) from None


def decode_request(line: bytes) -> Request:
    """Parse one request line (with or without its newline); raise ProtocolError if invalid.

    No input makes it raise anything else: every way untrusted bytes can fail to decode
    (invalid UTF-8 or JSON, nesting past the recursion limit, an integer past Python's digit
    limit, a value pydantic cannot describe) is a ProtocolError, answered ``bad_request``.
    """
    try:
        return parse_request(load_object(line))
    except ProtocolError:
        raise
    except (ValueError, RecursionError, OverflowError, UnicodeError) as exc:
        raise ProtocolError(f"request could not be decoded: {first_line(exc)}") from None
