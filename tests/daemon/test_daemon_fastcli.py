"""The commands that must start at once (`--version`, `healthcheck`, `ctl ping`: the
container's HEALTHCHECK every 30 s, liveness probes) against a real daemon: they answer, and
import none of the heavy packages (structlog, rich, pydantic, ...) that made them take 4-6x
`import click`. No timing is asserted (bench/startup.py measures it)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backup_sidecar import __version__
from support.daemon import DaemonRunner
from support.imports import heavy_imports, imported_modules, run_importtime


@pytest.mark.parametrize(
    "args", [("--version",), ("healthcheck",), ("ctl", "ping", "--json")], ids=" ".join
)
def test_fast_commands_answer_without_heavy_imports(
    args: tuple[str, ...],
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    wal_db: Path,
) -> None:
    """Each command, reading the daemon's YAML file (the socket) and the environment (the
    metrics port), gets its answer and imports no heavy package."""
    d = daemons.start(daemon_config(databases={"user": wal_db}, policies={"manual": {"keep": 1}}))
    env = {**d.env, "SIDECAR_METRICS__PORT": str(d.metrics_port)}
    done = run_importtime("--config", str(d.config_path), *args, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    modules = imported_modules(done.stderr)
    assert "click" in modules  # the parse found the import lines
    assert heavy_imports(modules) == set()
    if args[0] == "--version":
        assert done.stdout == f"backup-sidecar, version {__version__}\n"
    elif args[0] == "healthcheck":
        assert done.stdout.startswith(f"http://127.0.0.1:{d.metrics_port}/healthz: ")
    else:
        assert json.loads(done.stdout) == {"pong": True, "pid": d.proc.pid, "version": __version__}


def test_ctl_ping_text_output(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> None:
    """`ctl ping` without --json prints the fields as before (one `key: value` line each)."""
    d = daemons.start(daemon_config(databases={"user": wal_db}, policies={"manual": {"keep": 1}}))
    done = d.ctl("ping")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"pong: True\npid: {d.proc.pid}\nversion: {__version__}\n"


def test_ctl_list_and_status_print_tables_not_reprs(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> None:
    """`ctl list` prints the table `list` prints (human sizes and ages; before: `key=value`
    dumps), and `ctl status` a table of health, databases and next runs (before: Python dict
    reprs of each database's check)."""
    d = daemons.start(daemon_config(databases={"user": wal_db}, policies={"manual": {"keep": 2}}))
    name = d.request("backup", policy="manual")["archive"]
    ctl, local = d.ctl("list"), d.cli("list")
    assert ctl.returncode == 0 and local.returncode == 0, ctl.stderr + local.stderr

    def without_age(text: str) -> list[str]:  # AGE (columns 61-69) may tick between the two
        return [line[:61] + line[69:] for line in text.splitlines()]

    assert without_age(ctl.stdout) == without_age(local.stdout)
    header, row = ctl.stdout.splitlines()
    assert header.split() == ["NAME", "CREATED", "(UTC)", "AGE", "SIZE", "POLICY", "STATUS",
                              "DATABASES"]  # fmt: skip
    assert row.startswith(name) and " KiB " in row and "manual" in row and "user" in row
    status = d.ctl("status")
    assert status.returncode == 0, status.stderr
    assert "healthy     yes" in status.stdout
    lines = status.stdout.splitlines()
    assert any(ln.split()[:2] == ["user", "yes"] for ln in lines), status.stdout
    assert "{" not in status.stdout and "=" not in status.stdout


def test_ctl_list_shows_a_copy_of_another_backup_as_list_does(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> None:
    """An archive file holding another backup (a copy under another name): the socket's
    `list` carries `copy_of` and `ctl list` prints `(copy of NAME)` as `list` does (the socket
    refused every list answer when the field was new to `list --json` only); a restore of it,
    socket or CLI, says whose data it restores (it said nothing: outside attack, issue 15)."""
    d = daemons.start(daemon_config(databases={"user": wal_db}, policies={"manual": {"keep": 5}}))
    name = d.request("backup", policy="manual")["archive"]
    backup_dir = Path(d.request("status")["backup_dir"])
    (backup_dir / "kept_copy.tar.gz").write_bytes((backup_dir / f"{name}.tar.gz").read_bytes())
    listed = {a["name"]: a for a in d.request("list")["archives"]}
    assert (listed["kept_copy"]["copy_of"], listed[name]["copy_of"]) == (name, None)
    ctl, local = d.ctl("list"), d.cli("list")
    assert ctl.returncode == 0 and local.returncode == 0, ctl.stderr + local.stderr
    for out in (ctl.stdout, local.stdout):
        [row] = [ln for ln in out.splitlines() if ln.startswith("kept_copy ")]
        assert row.endswith(f"(copy of {name})"), row
    answer = d.request("restore", archive="kept_copy", confirm=True)
    assert (answer["copy_of"], answer["restored"]) == (name, ["user"])
    cli = d.cli("restore", "kept_copy", "--force")
    assert cli.returncode == 0, cli.stderr
    assert f"warning: kept_copy holds backup {name}" in cli.stderr
