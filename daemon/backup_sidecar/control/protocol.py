"""The control socket's wire protocol, shared by the server and the client.

Newline-delimited JSON: one request line, zero or more progress event lines, one response line.
Everything that crosses the socket is validated here by pydantic, the edge of the system; the
server and the client never look at raw JSON themselves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, TypeAlias

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_serializer,
)

from backup_sidecar import errors

ErrorCode: TypeAlias = Literal["bad_request", "not_found", "busy", "refused", "corrupt", "failed"]

ARCHIVE_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
INTERNAL_ERROR_MESSAGE: Final = "internal error in the daemon; see its log"


class ProtocolError(errors.UsageError):
    """A request line that is not a valid request (code ``bad_request``); nothing was run."""

    code: Final = "bad_request"

    def __init__(self, reason: str, *, op: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        #: The request's op when it named one of the protocol's ops (None: unparseable or
        #: unknown), so a refusal is counted under a bounded set of labels.
        self.op = op


class ControlError(errors.SidecarError):
    """The daemon answered a request with an error; ``code`` is one of the protocol's codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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


class RestoreRequest(_Request):
    op: Literal["restore"] = "restore"
    archive: ArchiveName
    databases: DatabaseNames = None
    confirm: bool = False
    dry_run: bool = False
    wait: bool = False


class PruneRequest(_Request):
    op: Literal["prune"] = "prune"
    policy: Identifier | None = None
    dry_run: bool = False
    keep: Annotated[int, Field(ge=0)] | None = None


class ScrubRequest(_Request):
    op: Literal["scrub"] = "scrub"


Request: TypeAlias = Annotated[
    PingRequest
    | StatusRequest
    | ListRequest
    | BackupRequest
    | VerifyRequest
    | RestoreRequest
    | PruneRequest
    | ScrubRequest,
    Field(discriminator="op"),
]
REQUEST_TYPES: Final = (
    PingRequest,
    StatusRequest,
    ListRequest,
    BackupRequest,
    VerifyRequest,
    RestoreRequest,
    PruneRequest,
    ScrubRequest,
)
OPS: Final = tuple(t.model_fields["op"].default for t in REQUEST_TYPES)
_REQUEST: TypeAdapter[Request] = TypeAdapter(Request)


class _Reply(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProgressEvent(_Reply):
    event: Literal["progress"] = "progress"
    stage: str
    done: int
    total: int


class ErrorBody(_Reply):
    code: ErrorCode
    message: str
    #: Only for a restore that wrote some databases and then failed (RestoreIncompleteError):
    #: what it restored, the pre_restore archive that undoes them, or where their old content
    #: is kept. Absent otherwise.
    restored: list[str] | None = None
    pre_restore_archive: str | None = None
    rescue: str | None = None

    @model_serializer(mode="wrap")
    def _drop_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None}


class OkResponse(_Reply):
    ok: Literal[True] = True
    result: dict[str, Any]


class ErrorResponse(_Reply):
    ok: Literal[False] = False
    error: ErrorBody


Reply: TypeAlias = ProgressEvent | OkResponse | ErrorResponse


@dataclass(frozen=True)
class EncodedResult:
    """An ``ok`` reply's result already encoded as one compact JSON object, shared by every
    reply that sends it: the daemon's `list` of thousands of archives is encoded once per change
    of its catalog, not copied into new objects and strings for each request."""

    body: bytes


def encode_ok(result: Mapping[str, Any] | EncodedResult) -> tuple[bytes, ...]:
    """An ``ok`` reply line, as pieces to send one after the other (a shared encoded result is
    sent as it is, never concatenated into a copy)."""
    if isinstance(result, EncodedResult):
        return (b'{"ok":true,"result":', result.body, b"}\n")
    return (encode(OkResponse(result=dict(result))),)


def encode(obj: BaseModel | Mapping[str, Any]) -> bytes:
    """One compact JSON line, newline-terminated (JSON escapes any newline inside strings)."""
    data = obj.model_dump(mode="json") if isinstance(obj, BaseModel) else dict(obj)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _load_object(line: bytes) -> dict[str, Any]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"request is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"request is not valid JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:  # "[[[[..." within the size limit: json recurses once per level
        raise ProtocolError("request is not valid JSON: nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # e.g. an integer past Python's digit limit
        raise ProtocolError(f"request is not valid JSON: {_first_line(exc)}") from None
    if not isinstance(data, dict):
        raise ProtocolError("a request is a JSON object")
    return data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"][1:]) or "request"
        cause = err.get("ctx", {}).get("error")
        parts.append(f"{loc}: {cause if cause is not None else err['msg']}")
    return "; ".join(parts)


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
        raise ProtocolError(f"bad {op} request: {_describe(exc)}", op=op) from None
    except (ValueError, RecursionError, OverflowError) as exc:
        raise ProtocolError(f"bad {op} request: {_first_line(exc)}", op=op) from None


def decode_request(line: bytes) -> Request:
    """Parse one request line (with or without its newline); raise ProtocolError if invalid.

    No input makes it raise anything else: every way untrusted bytes can fail to decode
    (invalid UTF-8 or JSON, nesting past the recursion limit, an integer past Python's digit
    limit, a value pydantic cannot describe) is a ProtocolError, answered ``bad_request``.
    """
    try:
        return parse_request(_load_object(line))
    except ProtocolError:
        raise
    except (ValueError, RecursionError, OverflowError, UnicodeError) as exc:
        raise ProtocolError(f"request could not be decoded: {_first_line(exc)}") from None


def decode_reply(line: bytes) -> Reply:
    """Parse one line the server sent: a progress event or the final response."""
    data = _load_object(line)
    model: type[Reply]
    if "event" in data:
        model = ProgressEvent
    elif data.get("ok") is True:
        model = OkResponse
    else:
        model = ErrorResponse
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(f"bad reply: {_describe(exc)}") from None


_CODES: Final[tuple[tuple[type[BaseException], ErrorCode], ...]] = (
    (errors.ArchiveNotFoundError, "not_found"),
    (errors.BusyError, "busy"),
    (errors.RestoreRefusedError, "refused"),
    (errors.CorruptArchiveError, "corrupt"),
    (errors.UsageError, "bad_request"),
    (errors.SidecarError, "failed"),
)


def error_code(exc: BaseException) -> ErrorCode:
    """The protocol code for an exception; anything that is not a SidecarError is ``failed``."""
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return "failed"


def error_body(exc: BaseException) -> ErrorBody:
    """The error a client sees: the sidecar's own one-line message, or a generic one for bugs."""
    if isinstance(exc, ControlError) and exc.code in _CODE_NAMES:
        return ErrorBody.model_validate({"code": exc.code, "message": exc.message})
    if isinstance(exc, errors.RestoreIncompleteError):
        return ErrorBody(
            code=error_code(exc),
            message=str(exc),
            restored=list(exc.restored),
            pre_restore_archive=exc.pre_restore_archive,
            rescue=str(exc.rescue) if exc.rescue else None,
        )
    if isinstance(exc, errors.SidecarError):
        return ErrorBody(code=error_code(exc), message=str(exc))
    return ErrorBody(code="failed", message=INTERNAL_ERROR_MESSAGE)


_CODE_NAMES: Final = frozenset(code for _, code in _CODES)
