"""The local control socket: a newline-delimited JSON protocol, its server and its client."""

from backup_sidecar.control.client import (
    ControlClient,
    DaemonConnectionError,
    DaemonNotRunningError,
    is_daemon_running,
)
from backup_sidecar.control.connection import PeerCred
from backup_sidecar.control.protocol import (
    BackupRequest,
    ControlError,
    ErrorCode,
    ListRequest,
    PingRequest,
    ProtocolError,
    PruneRequest,
    Request,
    RestoreRequest,
    ScrubRequest,
    StatusRequest,
    VerifyRequest,
    decode_request,
    encode,
    error_body,
    error_code,
)
from backup_sidecar.control.server import ControlServer, Handler
from backup_sidecar.control.socketfile import ControlSocketError

__all__ = [
    "BackupRequest",
    "ControlClient",
    "ControlError",
    "ControlServer",
    "ControlSocketError",
    "DaemonConnectionError",
    "DaemonNotRunningError",
    "ErrorCode",
    "Handler",
    "ListRequest",
    "PeerCred",
    "PingRequest",
    "ProtocolError",
    "PruneRequest",
    "Request",
    "RestoreRequest",
    "ScrubRequest",
    "StatusRequest",
    "VerifyRequest",
    "decode_request",
    "encode",
    "error_body",
    "error_code",
    "is_daemon_running",
]
