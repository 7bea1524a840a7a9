"""The two-sidecar tests' helper hears every line its child process prints."""

from __future__ import annotations

import subprocess
import sys

from support.offsite import Sidecar

_TWO_LINES_THEN_WAIT = (
    "import os, sys; os.write(1, b'holding\\nuploaded\\n'); sys.stdin.readline(); print('released')"
)


def test_says_hears_two_lines_that_arrive_together() -> None:
    """A child that prints two lines in one write (a fast file:// upload under load), then waits
    for its go: the second line is heard at once. A buffered readline took both lines from the
    pipe and the second ``says`` waited on the empty pipe: test_lease's two-sidecar test hung
    60 s after ``holding`` with ``uploaded`` already read."""
    process = subprocess.Popen(
        [sys.executable, "-c", _TWO_LINES_THEN_WAIT], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        child = Sidecar(process)
        assert child.says(timeout=30) == "holding"
        assert child.says(timeout=5) == "uploaded"
        child.tell()
        assert child.says(timeout=30) == "released"
    finally:
        process.kill()
        process.communicate(timeout=30)
