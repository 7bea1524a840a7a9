"""The local control socket: a newline-delimited JSON protocol, its server and its client.

requests.py and results.py are what crosses the socket, one model per op each way;
protocol.py the reply lines around them; server.py (with answer.py, connection.py and
socketfile.py) the daemon's side; client.py the other. The errors live in errors.py.
"""

from backup_sidecar.control.answer import Handler
from backup_sidecar.control.client import ControlClient, is_daemon_running
from backup_sidecar.control.connection import PeerCred
from backup_sidecar.control.protocol import ErrorCode, error_body, error_code
from backup_sidecar.control.requests import (
    BackupRequest,
    ExportRequest,
    ListRequest,
    OffsiteStatusRequest,
    PingRequest,
    PruneRequest,
    Request,
    RestoreRequest,
    ScrubRequest,
    StatusRequest,
    VerifyRequest,
    decode_request,
)
from backup_sidecar.control.results import (
    ArchiveEntry,
    BackupResult,
    DamagedArchive,
    ExportResult,
    KeptArchive,
    ListResult,
    OffsiteCopy,
    OffsiteStatusResult,
    PingResult,
    PruneResult,
    RestoreResult,
    Result,
    ScrubResult,
    StatusResult,
    VerifyResult,
)
from backup_sidecar.control.server import ControlServer
from backup_sidecar.control.wire import encode
from backup_sidecar.errors import (
    ControlError,
    ControlSocketError,
    DaemonConnectionError,
    DaemonNotRunningError,
    ProtocolError,
)

__all__ = [
    "ArchiveEntry",
    "BackupRequest",
    "BackupResult",
    "ControlClient",
    "ControlError",
    "ControlServer",
    "ControlSocketError",
    "DaemonConnectionError",
    "DaemonNotRunningError",
    "DamagedArchive",
    "ErrorCode",
    "ExportRequest",
    "ExportResult",
    "Handler",
    "KeptArchive",
    "ListRequest",
    "ListResult",
    "OffsiteCopy",
    "OffsiteStatusRequest",
    "OffsiteStatusResult",
    "PeerCred",
    "PingRequest",
    "PingResult",
    "ProtocolError",
    "PruneRequest",
    "PruneResult",
    "Request",
    "RestoreRequest",
    "RestoreResult",
    "Result",
    "ScrubRequest",
    "ScrubResult",
    "StatusRequest",
    "StatusResult",
    "VerifyRequest",
    "VerifyResult",
    "decode_request",
    "encode",
    "error_body",
    "error_code",
    "is_daemon_running",
]
