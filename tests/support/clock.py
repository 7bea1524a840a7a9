"""A wall clock a daemon obeys: libfaketime preloaded with an offset file it re-reads on every
call, CLOCK_MONOTONIC left alone (as an NTP step leaves it).

libfaketime 0.9.10 answers EINVAL to `clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)` in that
mode, which is how Python 3.11's `time.sleep` sleeps, so the process under test gets a
`sitecustomize` that sleeps on a condition wait instead (condition waits are unaffected).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from support.cli import sitecustomize

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
SLEEP_SHIM = """\
import threading, time
def _sleep(seconds, _wait=threading.Event().wait):
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    _wait(seconds)
time.sleep = _sleep
"""


def find_libfaketime() -> Path | str:
    """libfaketime's preload library, installed with apt-get (as root) if it is missing; or
    why it is not there."""
    if not LIBFAKETIME.exists() and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "faketime"],
                       capture_output=True, check=False, timeout=300)  # fmt: skip
    if not LIBFAKETIME.exists():
        return f"libfaketime not installed ({LIBFAKETIME}); apt-get install faketime"
    return LIBFAKETIME


def fake_clock_env(workdir: Path, libfaketime: Path) -> tuple[Path, dict[str, str]]:
    """A clock file in ``workdir`` (offset "+0" to start) and the environment that makes a
    process obey it."""
    clock = workdir / "faketime.rc"
    clock.write_text("+0\n")
    env = {
        "LD_PRELOAD": str(libfaketime),
        "FAKETIME_TIMESTAMP_FILE": str(clock),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        **sitecustomize(workdir, SLEEP_SHIM),
    }
    return clock, env


def step_clock(clock: Path, offset: str) -> None:
    """Step the faked wall clock to ``offset`` from the real one ("-1h", "+1d")."""
    tmp = clock.with_suffix(".tmp")
    tmp.write_text(f"{offset}\n")
    tmp.replace(clock)
