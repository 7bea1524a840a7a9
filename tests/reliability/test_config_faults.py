"""Invalid configuration files (issue 5, fault 15), through the real CLI and the real daemon.

Each kind of invalid YAML (syntax, unknown keys at several levels, wrong types, bad cron,
negative keep, an unknown database in a policy, a duplicate policy, a bad duration or zone)
makes ``config check`` and ``run`` exit 2 with one line naming the file and the key path (or
the line, for YAML syntax); and a running daemon sent SIGHUP with each of them logs
``config_reload_refused`` naming the same fault and keeps running its old policies: a backup of
the old policy completes after every refused reload.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from support.cli import one_error_line, run_cli
from support.daemon import DaemonRunner
from support.databases import make_content_db
from support.files import short_dir

GOOD = """\
backup_dir: {backup_dir}
databases:
  user: {{path: {db}}}
policies:
  often: {{every: 1s, keep: 3}}
  nightly: {{schedule: "0 3 * * *", keep: 7}}
  pre_restore: {{keep: 5}}
health: {{interval: 1h, max_backup_age: {{}}}}
metrics: {{enabled: false}}
control: {{socket: {socket}, mode: "0600"}}
grace_period: 5s
"""

#: name -> (a replacement applied to the good file, what the error line must contain)
INVALID: dict[str, tuple[tuple[str, str], str]] = {
    "syntax_unclosed_flow": (
        ("often: {every: 1s, keep: 3}", "often: {every: 1s, keep: [3}"),
        "line 5",
    ),
    "syntax_tab_indent": (("  nightly:", "\tnightly:"), "line 6"),
    "unknown_top_level_key": (("grace_period: 5s", "grace_perod: 5s"), "grace_perod: unknown key"),
    "unknown_policy_key": (("keep: 3}", "kepe: 3}"), "policies.often.kepe: unknown key"),
    "unknown_database_key": (("{path:", "{pth:"), "databases.user.pth: unknown key"),
    "unknown_nested_key": (("interval: 1h", "intervall: 1h"), "health.intervall: unknown key"),
    "wrong_type_keep": (("keep: 3}", "keep: many}"), "policies.often.keep"),
    "wrong_type_port": (
        ("metrics: {enabled: false}", 'metrics: {enabled: false, port: "x"}'),
        "metrics.port",
    ),
    "wrong_type_section": (
        ("health: {interval: 1h, max_backup_age: {}}", "health: [1h]"),
        "health: Input should be a valid dictionary",
    ),
    "bad_cron_range": (('"0 3 * * *"', '"61 3 * * *"'), "policies.nightly.schedule"),
    "bad_cron_fields": (('"0 3 * * *"', '"0 3 * *"'), "policies.nightly.schedule"),
    "negative_keep": (("keep: 7}", "keep: -1}"), "policies.nightly.keep: must be >= 0"),
    "unknown_database_in_policy": (
        ("keep: 7}", "keep: 7, databases: [user, nosuch]}"),
        "policies.nightly.databases: unknown database 'nosuch'",
    ),
    "duplicate_policy": (
        ("  pre_restore:", "  often: {every: 2s, keep: 1}\n  pre_restore:"),
        "duplicate key 'often'",
    ),
    "bad_duration": (("every: 1s", "every: soon"), "policies.often.every"),
    "huge_every": (("every: 1s", "every: 2000000d"), "policies.often.every: must be at most 3650d"),
    "tiny_health_interval": (
        ("interval: 1h", "interval: 1ms"),
        "health.interval: must be at least 1s",
    ),
    "bad_timezone": (("grace_period: 5s", "grace_period: 5s\ntimezone: Mars/Olympus"), "timezone"),
    # Outside attack 1, finding 1: Python errors from hostile values (a traceback, exit 1; the
    # daemon died on SIGHUP).
    "huge_integer": (
        ("keep: 3}", f"keep: {'9' * 5000}}}"),
        "policies.often.keep: line 5, column 28: integer of 5000 characters is out of range",
    ),
    "deep_nesting": (
        ("grace_period: 5s", f"grace_period: 5s\nx: {'[' * 50000}{']' * 50000}"),
        "x.0.0.0....: line 12, column 67: nested deeper than 64 levels",
    ),
    "impossible_date": (
        ("grace_period: 5s", "grace_period: 5s\ntimezone: 2001-13-45"),
        "timezone: line 12, column 11: invalid value: month must be in 1..12",
    ),
    "oversized_file": (
        ("grace_period: 5s", f"grace_period: 5s\n# {'x' * (1 << 20)}"),
        "is larger than 1 MiB; not a configuration file, not read",
    ),
}


@dataclass(frozen=True)
class ConfigScene:
    root: Path
    good: str
    backup_dir: Path
    db: Path
    socket: Path

    def invalid(self, case: str) -> str:
        (old, new), _ = INVALID[case]
        assert old in self.good, (case, old)
        return self.good.replace(old, new, 1)

    def write(self, name: str, text: str) -> Path:
        path = self.root / f"{name}.yaml"
        path.write_text(text)
        return path


@pytest.fixture(scope="module")
def config_scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConfigScene]:
    root = tmp_path_factory.mktemp("config")
    db = make_content_db(root / "live" / "user_data.db", rows=20, tag="live", wal=True)
    sock = short_dir()
    backup_dir = root / "backups"
    good = GOOD.format(backup_dir=backup_dir, db=db, socket=sock / "c.sock")
    yaml.safe_load(good)  # the base file itself is valid YAML
    try:
        yield ConfigScene(root, good, backup_dir, db, sock / "c.sock")
    finally:
        shutil.rmtree(sock, ignore_errors=True)


def test_invalid_files_are_invalid_yaml_or_settings(config_scene: ConfigScene) -> None:
    """Positive control: the good file passes ``config check`` (exit 0), so every refusal
    below is caused by its one change."""
    path = config_scene.write("good", config_scene.good)
    result = run_cli("config", "check", str(path))
    assert result.returncode == 0, result.stderr
    assert "policy often" in result.stdout


@dataclass(frozen=True)
class CliResults:
    runs: dict[str, tuple[Path, subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]]
    started_something: bool


@pytest.fixture(scope="module")
def cli_results(config_scene: ConfigScene) -> CliResults:
    """``config check FILE`` and ``--config FILE run`` for every invalid file, two at a time;
    and whether any ``run`` created the backup directory or the control socket."""
    # Neutral file names, so a file name can never supply the fault an error line must name.
    paths = {
        case: config_scene.write(f"invalid-{n}", config_scene.invalid(case))
        for n, case in enumerate(INVALID)
    }

    def run(
        case: str,
    ) -> tuple[Path, subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
        path = paths[case]
        check = run_cli("config", "check", str(path))
        daemon = run_cli("run", config=path, timeout=60)
        return path, check, daemon

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        runs = dict(zip(INVALID, pool.map(run, INVALID), strict=True))
    started = config_scene.backup_dir.exists() or config_scene.socket.exists()
    return CliResults(runs, started)


@pytest.mark.parametrize("case", sorted(INVALID))
def test_config_check_and_run_exit_2_naming_the_key(case: str, cli_results: CliResults) -> None:
    """``config check`` and ``run`` with the invalid file each exit 2 with one stderr line
    naming the file and the key path (the line for YAML syntax errors); ``run`` starts
    nothing: no backup directory, no control socket."""
    path, check, daemon = cli_results.runs[case]
    _, fault = INVALID[case]
    for result in (check, daemon):
        assert result.returncode == 2, (case, result.stderr)
        line = one_error_line(result)
        assert str(path) in line and fault in line, (case, line)
    assert not cli_results.started_something


def test_a_burst_of_signals_never_wedges_the_daemon(
    config_scene: ConfigScene, daemons: DaemonRunner
) -> None:
    """Thousands of SIGHUPs while backups run every second: the daemon keeps backing up,
    answers on its socket, and stops on SIGTERM within its grace period. (A signal handler that
    took a lock the interrupted main thread held once froze the main loop and every job that
    woke it: no reload, no stop, no further backups.)"""
    daemon = daemons.start(config_scene.good)
    daemon.log.wait("backup_completed", policy="often", timeout=60)
    mark = daemon.log.mark()
    for _ in range(5000):
        daemon.proc.send_signal(signal.SIGHUP)
    daemon.log.wait("config_reloaded", since=mark, timeout=30)
    after = daemon.log.mark()
    daemon.log.wait("backup_completed", since=after, policy="often", count=2, timeout=30)
    assert "often" in daemon.request("status", timeout=30)["next_runs"]
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=30) == 0


@pytest.mark.slow
def test_sighup_with_each_invalid_file_keeps_the_old_policies(
    config_scene: ConfigScene, daemons: DaemonRunner
) -> None:
    """A daemon running the good file (policy ``often`` every second) is sent SIGHUP after its
    file was replaced by each invalid one in turn: each time it logs config_reload_refused
    naming the fault, stays up, and a backup of ``often`` completes after the refusal; then
    likewise with a FIFO in the file's place; its status still lists the old policies. A valid
    file then reloads."""
    daemon = daemons.start(config_scene.good)
    daemon.log.wait("backup_completed", policy="often", timeout=60)
    refused = 0
    for case in sorted(INVALID):
        _, fault = INVALID[case]
        daemon.rewrite_config(config_scene.invalid(case))
        mark = daemon.log.mark()
        daemon.proc.send_signal(signal.SIGHUP)
        event = daemon.log.wait("config_reload_refused", since=mark, timeout=30)
        assert fault in event["error"], (case, event)
        after = daemon.log.mark()
        daemon.log.wait("backup_completed", since=after, policy="often", timeout=30)
        assert daemon.proc.poll() is None
        refused += 1
    # A FIFO in the file's place: opening it used to wait for a writer, forever.
    fifo = daemon.config_path.with_suffix(".fifo")
    os.mkfifo(fifo)
    fifo.replace(daemon.config_path)
    mark = daemon.log.mark()
    daemon.proc.send_signal(signal.SIGHUP)
    event = daemon.log.wait("config_reload_refused", since=mark, timeout=30)
    assert "is a FIFO, not a regular file" in event["error"], event
    daemon.log.wait("backup_completed", since=daemon.log.mark(), policy="often", timeout=30)
    refused += 1
    status = daemon.request("status")
    assert {"often", "nightly"} <= set(status["next_runs"])
    assert daemon.log.find("config_reloaded") == []

    daemon.rewrite_config(config_scene.good.replace("every: 1s", "every: 1h"))
    mark = daemon.log.mark()
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.log.wait("config_reloaded", since=mark, timeout=30)
    print(f"\nSIGHUP with {refused} invalid files: each refused, old policies kept running")


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_config_path_that_is_no_regular_file_is_refused_at_once(
    kind: str, tmp_path: Path
) -> None:
    """Outside attack 1, finding 14: ``config check FIFO`` (and ``--config FIFO run``) waited
    forever for a writer; now both exit 2 at once with one line naming the path and its kind."""
    path = tmp_path / "sidecar.yaml"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    shown = "a FIFO" if kind == "fifo" else "a directory"
    for args in (("config", "check", str(path)), ("--config", str(path), "run")):
        result = run_cli(*args, timeout=30)
        assert result.returncode == 2, result.stderr
        assert one_error_line(result).endswith(f"{path}: is {shown}, not a regular file")
