"""What the one-shot CLI commands print when they fail or their reader goes away (issue 12, 10).

Real processes: the CLI as its own process, its stdout a real pipe into GNU ``head -1``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.archives import manual_archives
from support.cli import cli_command, cli_env, one_error_line, run_cli
from support.databases import make_content_db

#: Enough archives that `list` prints far more than a pipe holds (64 KiB).
ARCHIVES = 1500


@dataclass(frozen=True)
class Scene:
    backup_dir: Path
    env: dict[str, str]
    archive: str


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    root = tmp_path_factory.mktemp("cli-output")
    user = make_content_db(root / "live" / "user_data.db", rows=50, tag="live", wal=True)
    arrow = make_content_db(root / "live" / "arrow_database.db", rows=50, tag="live", wal=False)
    backup_dir = root / "backups"
    backup_dir.mkdir()
    one = manual_archives(backup_dir, ARCHIVES, user=user)
    yield Scene(backup_dir, cli_env(backup_dir, arrow=arrow, user=user), one.name)


def test_list_into_head_ends_quietly(scene: Scene) -> None:
    """`list | head -1` over 1,500 archives: head prints the first line and exits; `list` then
    ends without a word on stderr (it printed "backup-sidecar: error: Broken pipe"), exit 1 as
    Python's documentation and Click do on EPIPE, or 0 when everything fit in the pipe."""
    with subprocess.Popen(
        cli_command("list"),
        env=scene.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as lister:
        assert lister.stdout is not None and lister.stderr is not None
        head = subprocess.run(
            ["head", "-1"], stdin=lister.stdout, capture_output=True, timeout=60, check=True
        )
        lister.stdout.close()  # only head held the read end: its exit closed the pipe
        stderr = lister.stderr.read().decode()
        code = lister.wait(timeout=60)
    first = head.stdout.decode()
    assert first.startswith("NAME"), first
    assert stderr == "", stderr
    assert code in (0, 1), code


def test_list_with_stdout_closed_still_works(scene: Scene) -> None:
    """`list >&-` (no stdout at all: Python's `sys.stdout` is None) exits 0 without a
    traceback, as before the closed-pipe handling flushed stdout itself."""
    done = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", *cli_command("list")],
        env=scene.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def _error_object(stdout: str) -> tuple[str, str]:
    payload = json.loads(stdout)
    assert payload["ok"] is False, payload
    assert set(payload["error"]) == {"code", "message"}, payload
    return str(payload["error"]["code"]), str(payload["error"]["message"])


def test_json_commands_print_the_error_object(scene: Scene, tmp_path: Path) -> None:
    """Every --json command that fails prints the control socket's error object on stdout
    (`{"ok": false, "error": {"code", "message"}}`, the socket's codes), besides the one error
    line on stderr and the exit code; `verify --json` printed nothing at all."""
    broken = scene.backup_dir / "manual_20990101_000000.tar.gz"
    data = bytearray((scene.backup_dir / scene.archive).read_bytes())
    data[len(data) // 2] ^= 0xFF
    broken.write_bytes(bytes(data))
    try:
        cases = [
            (("verify", "--json", "nosuch"), 1, "not_found", "nosuch"),
            (("verify", "--json", broken.name), 1, "corrupt", broken.name.removesuffix(".tar.gz")),
            (("restore", "--json", "--force", "nosuch"), 1, "not_found", "nosuch"),
            (("backup", "--json", "--policy", "pre_restore"), 2, "bad_request", "pre_restore"),
            (("prune", "--json", "--keep", "-1"), 2, "bad_request", "--keep"),
            (("prune", "--json", "--policy", "nope"), 2, "bad_request", "'nope'"),
        ]
        for args, exit_code, code, named in cases:
            done = run_cli(*args, env=scene.env)
            assert done.returncode == exit_code, (args, done.stdout, done.stderr)
            line = one_error_line(done)
            got_code, message = _error_object(done.stdout)
            assert got_code == code, (args, done.stdout)
            assert named in message, (args, message)
            assert line.endswith(message), (line, message)
    finally:
        broken.unlink()
