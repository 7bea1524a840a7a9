"""The control socket's wire protocol, shared by the server and the client.

Newline-delimited JSON: one request line (control/requests.py), zero or more progress event
lines, one response line: ``{"ok": true, "result": ...}`` with the op's result
(control/results.py), or ``{"ok": false, "error": ...}`` with one of the protocol's codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)

from backup_sidecar import errors
from backup_sidecar.control.results import Result
from backup_sidecar.control.wire import describe, encode, load_object
from backup_sidecar.errors import ControlError, ProtocolError

ErrorCode: TypeAlias = Literal["bad_request", "not_found", "busy", "refused", "corrupt", "failed"]

INTERNAL_ERROR_MESSAGE: Final = "internal error in the daemon; see its log"


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
    #: Only for `restore --latest` from offsite with databases from several archives: every
    #: pre_restore archive that undoes what it restored (``pre_restore_archive`` the last).
    pre_restore_archives: list[str] | None = None
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


def encode_ok(result: Result | EncodedResult) -> tuple[bytes, ...]:
    """An ``ok`` reply line, as pieces to send one after the other (a shared encoded result is
    sent as it is, never concatenated into a copy)."""
    if isinstance(result, EncodedResult):
        return (b'{"ok":true,"result":', result.body, b"}\n")
    return (encode(OkResponse(result=result.model_dump(mode="json"))),)


def decode_reply(line: bytes) -> Reply:
    """Parse one line the server sent: a progress event or the final response."""
    data = load_object(line)
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
        raise ProtocolError(f"bad reply: {describe(exc)}") from None


_CODES: Final[tuple[tuple[type[BaseException], ErrorCode], ...]] = (
    (errors.ArchiveNotFoundError, "not_found"),
    (errors.OffsiteObjectNotFoundError, "not_found"),
    (errors.OffsiteNothingToRestoreError, "not_found"),
    (errors.OffsiteObjectCorruptError, "corrupt"),
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
            pre_restore_archives=list(exc.pre_restore_archives)
            if isinstance(exc, errors.OffsiteRestoreIncompleteError)
            else None,
            rescue=str(exc.rescue) if exc.rescue else None,
        )
    if isinstance(exc, errors.SidecarError):
        return ErrorBody(code=error_code(exc), message=str(exc))
    return ErrorBody(code="failed", message=INTERNAL_ERROR_MESSAGE)


_CODE_NAMES: Final = frozenset(code for _, code in _CODES)
