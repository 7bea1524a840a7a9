"""What a command imports: run it as its own process under ``python -X importtime``."""

from __future__ import annotations

import subprocess
import sys

#: Packages a command that must start at once may not import (each costs a large part of
#: `import click`, or pulls the daemon's machinery in).
HEAVY = frozenset(
    {"structlog", "rich", "pydantic", "pydantic_core", "pydantic_settings", "prometheus_client",
     "apscheduler", "obstore", "pyrage", "sqlean", "backports", "apprise", "isal",
     "importlib.metadata", "urllib.request", "email", "ssl", "yaml"}
)  # fmt: skip


def imported_modules(stderr: str) -> set[str]:
    """The modules `-X importtime` reported on ``stderr``."""
    return {
        line.split("|")[2].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and "|" in line and "self [us]" not in line
    }


def heavy_imports(modules: set[str]) -> set[str]:
    """The ones among ``modules`` that are (under) a `HEAVY` name."""
    return {m for m in modules if any(m == h or m.startswith(f"{h}.") for h in HEAVY)}


def run_importtime(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -X importtime -m backup_sidecar ARGS...`, stdin not a terminal."""
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "backup_sidecar", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
