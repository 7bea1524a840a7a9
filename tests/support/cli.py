"""The real CLI as its own process: `python -m backup_sidecar ...`, stdin never a terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ERROR_PREFIX = "backup-sidecar: error: "


def clean_env(**extra: str) -> dict[str, str]:
    """This environment minus anything that would override a test's paths or YAML file."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("SIDECAR_") or k.endswith("_DATABASE_PATH") or k == "BACKUP_DIR")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def sitecustomize(workdir: Path, code: str) -> dict[str, str]:
    """The environment that makes a Python process run ``code`` first (a sitecustomize module
    in ``workdir``/shim): how a test puts a spy or a fault into the real daemon."""
    shim = workdir / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(code)
    return {"PYTHONPATH": os.pathsep.join([str(shim), *sys.path])}


def cli_env(
    backup_dir: Path, *, user: Path, arrow: Path | None = None, **extra: str
) -> dict[str, str]:
    """The container's way of configuring the CLI: paths from the environment (``extra`` may
    override any of them). The arrow database defaults to one beside the user database."""
    paths = {
        "BACKUP_DIR": str(backup_dir),
        "ARROW_DATABASE_PATH": str(arrow or user.parent / "arrow_database.db"),
        "USER_DATABASE_PATH": str(user),
        "SIDECAR_LOG_FORMAT": "json",
    }
    return clean_env(**{**paths, **extra})


def cli_command(*args: str, config: Path | None = None) -> list[str]:
    """The command line; with ``config``, `--config FILE --log-format json` come first."""
    head = ["--config", str(config), "--log-format", "json"] if config is not None else []
    return [sys.executable, "-m", "backup_sidecar", *head, *args]


def run_cli(
    *args: str,
    config: Path | None = None,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 300,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """The real CLI as its own process (``env`` defaults to `clean_env()`); stdin is not a
    terminal: ``input`` when given, else /dev/null."""
    return subprocess.run(
        cli_command(*args, config=config),
        env=clean_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        cwd=cwd,
    )


def is_log_record(line: str) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and "event" in record


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single `backup-sidecar: error: ...` line on stderr (JSON log records aside)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.strip().splitlines() if not is_log_record(ln)]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(ERROR_PREFIX), lines[0]
    return lines[0]


@dataclass
class Sidecar:
    """The real CLI, run as a subprocess against one set of databases and one backup dir."""

    env: dict[str, str]
    backup_dir: Path

    def run(
        self, *args: str, input: str | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env=self.env, input=input, timeout=timeout)
