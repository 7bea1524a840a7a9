"""The control socket's file: replace only a stale socket, bind privately, remove only our own.

A path that is not a socket, or a socket another process still answers on, is left untouched.
"""

from __future__ import annotations

import os
import socket
import stat
import threading
from pathlib import Path
from typing import Final

from backup_sidecar.errors import ControlSocketError

MAX_PATH_BYTES: Final = 107
BACKLOG: Final = 128
_UMASK_LOCK = threading.Lock()


def clear_path(path: Path) -> None:
    """Remove a stale socket at ``path``; refuse anything else, or a socket a server answers on."""
    if len(os.fsencode(path)) > MAX_PATH_BYTES:
        raise ControlSocketError(path, f"path is longer than {MAX_PATH_BYTES} bytes")
    try:
        st = path.lstat()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlSocketError(path, "exists and is not a socket; refusing to replace it")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            path.unlink()  # stale: left by a daemon that died
            return
        except OSError as exc:
            raise ControlSocketError(path, f"cannot tell whether it is in use: {exc}") from exc
    raise ControlSocketError(path, "another process is listening on it")


def bind(path: Path, *, mode: int) -> tuple[socket.socket, tuple[int, int]]:
    """Listen on ``path``; return the socket and the file's (dev, inode) identity.

    The file is created 0700 under a private umask and only then chmod-ed to ``mode``, so it
    is never more open than asked, not even for an instant.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound = False
    try:
        with _UMASK_LOCK:  # the umask is process-wide: set it for the bind alone
            previous = os.umask(0o077)
            try:
                sock.bind(str(path))
                bound = True
            finally:
                os.umask(previous)
        path.chmod(mode)
        st = path.lstat()
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if bound:
            path.unlink(missing_ok=True)
        raise ControlSocketError(path, f"cannot listen: {exc.strerror or exc}") from exc
    return sock, (st.st_dev, st.st_ino)


def remove_if_ours(path: Path, identity: tuple[int, int] | None) -> None:
    """Unlink ``path`` if it is still the socket we bound (never a successor's)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if (st.st_dev, st.st_ino) == identity:
        path.unlink()
