"""Ending a test's child process: SIGTERM first, SIGKILL only when it ignores the deadline."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def terminate(proc: subprocess.Popen[Any], *, timeout: float) -> bool:
    """SIGTERM ``proc`` if it still runs and wait up to ``timeout`` seconds; SIGKILL it if it
    does not exit by then. False when it had to be killed (it ignored SIGTERM)."""
    if proc.poll() is not None:
        return True
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return False
    return True
