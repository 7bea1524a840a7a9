"""The seed's scripts (scripts/backup-databases.sh, scripts/restore-databases.sh) over the CLI.

Most tests run the scripts against the real CLI and real databases; the daemon-routing tests
put a recording stand-in for the CLI behind ``$BACKUP_SIDECAR_BIN`` (the boundary the scripts
talk to) and a real Unix socket at ``$SIDECAR_SOCKET``.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backup_sidecar.appdata.demo import build_demo
from support.daemon import DaemonRunner, quiet_config
from support.databases import count

ROOT = Path(__file__).resolve().parents[1]
BACKUP_SH = ROOT / "scripts" / "backup-databases.sh"
RESTORE_SH = ROOT / "scripts" / "restore-databases.sh"
PYTHON_CLI = f"{sys.executable} -m backup_sidecar"


def _cli_ready() -> bool:
    """True when the real CLI can run backup/restore (it is written alongside these scripts)."""
    for command in ("backup", "restore", "list", "verify", "cleanup"):
        probe = subprocess.run(
            [sys.executable, "-m", "backup_sidecar", command, "--help"],
            capture_output=True,
            check=False,
            timeout=60,
        )
        if probe.returncode != 0:
            return False
    return True


needs_cli = pytest.mark.skipif(
    not _cli_ready(),
    reason="the backup-sidecar CLI (backup/restore/list/verify/cleanup) is not runnable yet",
)

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """Demo ArrowTuner databases (synthetic arrows, demo users) under tmp_path/var."""
    return build_demo(tmp_path / "var", synthetic=True).root


@pytest.fixture
def script_env(app: Path, tmp_path: Path) -> dict[str, str]:
    """The environment of the container: database paths and backup dir, no daemon socket."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_DATABASE_PATH")}
    for key in ("SIDECAR_CONFIG", "NO_COLOR", "SIDECAR_CONTROL__SOCKET"):
        env.pop(key, None)
    env.update(
        ARROW_DATABASE_PATH=str(app / "databases" / "arrow_database.db"),
        USER_DATABASE_PATH=str(app / "databases" / "user_data.db"),
        BACKUP_DIR=str(app / "backups"),
        SIDECAR_LOG_FORMAT="json",
        SIDECAR_SOCKET=str(tmp_path / "no-daemon.sock"),
        BACKUP_SIDECAR_BIN=PYTHON_CLI,
    )
    return env


@pytest.fixture
def run(script_env: dict[str, str]) -> Run:
    """Run a script with the container environment; stdin is not a terminal."""

    def go(script: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(script), *args],
            env={**script_env, **env},
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
            timeout=300,
        )

    return go


def users(db: Path) -> int:
    return count(db, "SELECT count(*) FROM users")


def add_user(db: Path, google_id: str) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "INSERT INTO users (google_id, email) VALUES (?, ?)", (google_id, f"{google_id}@x")
        )
    conn.close()


# --- no CLI needed ----------------------------------------------------------------------------


@pytest.mark.parametrize("script", [BACKUP_SH, RESTORE_SH], ids=["backup", "restore"])
def test_help_lists_the_seed_flags(script: Path, run: Run) -> None:
    """--help exits 0 and documents every flag of the seed's script, without colour codes
    when stdout is not a terminal."""
    result = run(script, "--help")
    assert result.returncode == 0
    flags = (
        ["--name", "--arrow-db-only", "--user-db-only", "--cleanup", "--keep", "--config"]
        if script == BACKUP_SH
        else ["--list", "--file", "--arrow-db-only", "--user-db-only", "--force", "--verify"]
    )
    for flag in flags:
        assert flag in result.stdout
    assert "\x1b[" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("script", "args"),
    [
        (BACKUP_SH, ["--bogus"]),
        (BACKUP_SH, ["--keep", "many", "--cleanup"]),
        (BACKUP_SH, ["--arrow-db-only", "--user-db-only"]),
        (RESTORE_SH, []),
        (RESTORE_SH, ["--verify"]),
        (RESTORE_SH, ["--file"]),
        (RESTORE_SH, ["--file", "x", "--arrow-db-only", "--user-db-only"]),
    ],
)
def test_bad_usage_exits_2_with_one_clear_line(script: Path, args: list[str], run: Run) -> None:
    """Flag mistakes are caught by the script itself: exit 2 and a message naming the flag."""
    result = run(script, *args)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert result.stdout == ""


@pytest.fixture
def recording_cli(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A stand-in CLI that logs its argv (one line per call) and answers `ctl ping`, plus a
    real listening-capable Unix socket file at the path the scripts probe."""
    log = tmp_path / "calls.log"
    stub = tmp_path / "fake-cli"
    stub.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {log}\n'
        'echo "socket=${SIDECAR_CONTROL__SOCKET:-}" >> ' + str(log) + "\n"
        'if [[ "$*" == "ctl ping" ]]; then exit "${STUB_PING_RC:-0}"; fi\n'
        "exit 0\n"
    )
    stub.chmod(0o755)
    sock_path = tmp_path / "ctl.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(sock_path))
    try:
        yield stub, sock_path
    finally:
        sock.close()


def calls(log: Path) -> list[str]:
    lines = log.read_text().splitlines()
    return [line for line in lines if not line.startswith("socket=")]


def test_restore_goes_through_a_running_daemon(recording_cli: tuple[Path, Path], run: Run) -> None:
    """With a live control socket, --list/--verify/--file NAME use `ctl`, archives are passed by
    name (.tar.gz stripped), one database maps to --db, and the confirmation is given as
    --force; an archive given as a path goes to the local CLI as given."""
    stub, sock = recording_cli
    env = {"BACKUP_SIDECAR_BIN": str(stub), "SIDECAR_SOCKET": str(sock)}
    assert run(RESTORE_SH, "--list", **env).returncode == 0
    assert run(RESTORE_SH, "--verify", "--file", "daily_1.tar.gz", **env).returncode == 0
    result = run(RESTORE_SH, "--file", "daily_1", "--user-db-only", "--force", **env)
    assert result.returncode == 0, result.stderr
    pathed = run(RESTORE_SH, "--file", "/b/daily_1.tar.gz", "--force", **env)
    assert pathed.returncode == 0, pathed.stderr
    assert "is a path: using the local CLI" in pathed.stderr
    log = sock.parent / "calls.log"
    assert calls(log) == [
        "ctl ping",
        "ctl list",
        "ctl ping",
        "ctl verify daily_1",
        "ctl ping",
        "ctl restore daily_1 --db user --force",
        "ctl ping",
        "restore /b/daily_1.tar.gz --force",
    ]
    assert f"socket={sock}" in log.read_text().splitlines()


def test_restore_through_daemon_needs_force_without_a_terminal(
    recording_cli: tuple[Path, Path], run: Run
) -> None:
    """Without a terminal and without --force the script refuses (exit 1) and never sends
    a restore to the daemon."""
    stub, sock = recording_cli
    result = run(
        RESTORE_SH, "--file", "daily_1", BACKUP_SIDECAR_BIN=str(stub), SIDECAR_SOCKET=str(sock)
    )
    assert result.returncode == 1
    assert "--force" in result.stderr
    assert calls(sock.parent / "calls.log") == ["ctl ping"]


def test_unanswering_socket_falls_back_to_the_local_cli(
    recording_cli: tuple[Path, Path], run: Run
) -> None:
    """A socket file whose daemon does not answer is reported and the local CLI is used,
    with the archive passed as given."""
    stub, sock = recording_cli
    env = {"BACKUP_SIDECAR_BIN": str(stub), "SIDECAR_SOCKET": str(sock), "STUB_PING_RC": "1"}
    result = run(RESTORE_SH, "--file", "/b/x.tar.gz", "--arrow-db-only", "--force", **env)
    assert result.returncode == 0
    assert "does not answer" in result.stderr
    assert calls(sock.parent / "calls.log") == [
        "ctl ping",
        "restore /b/x.tar.gz --db arrow --force",
    ]


def test_cli_exit_code_passes_through(tmp_path: Path, run: Run) -> None:
    """Whatever the CLI exits with, the script exits with, and its stderr is kept."""
    stub = tmp_path / "failing-cli"
    stub.write_text("#!/usr/bin/env bash\necho 'archive x is corrupt: bad crc' >&2\nexit 1\n")
    stub.chmod(0o755)
    result = run(BACKUP_SH, "--name", "x", BACKUP_SIDECAR_BIN=str(stub))
    assert result.returncode == 1
    assert "archive x is corrupt: bad crc" in result.stderr
    result = run(RESTORE_SH, "--verify", "--file", "x", BACKUP_SIDECAR_BIN=str(stub))
    assert result.returncode == 1
    assert "archive x is corrupt: bad crc" in result.stderr


# --- against the real CLI ---------------------------------------------------------------------


@needs_cli
def test_backup_prints_the_archive_path(app: Path, run: Run) -> None:
    """A named backup writes <backup_dir>/<name>.tar.gz with the metadata first and both
    databases, and prints its path on stdout."""
    result = run(BACKUP_SH, "--name", "production_backup_2025_08_04")
    assert result.returncode == 0, result.stderr
    archive = app / "backups" / "production_backup_2025_08_04.tar.gz"
    assert result.stdout.strip().splitlines()[-1] == str(archive)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names[0] == "backup_metadata.json"
    assert set(names[1:]) == {"arrow_database.db", "user_data.db"}


@needs_cli
def test_user_db_only_backup_and_cleanup(app: Path, run: Run) -> None:
    """--user-db-only archives just user_data.db; --cleanup --keep 1 then leaves one archive."""
    first = run(BACKUP_SH, "--name", "first", "--user-db-only")
    assert first.returncode == 0, first.stderr
    with tarfile.open(app / "backups" / "first.tar.gz") as tar:
        assert tar.getnames() == ["backup_metadata.json", "user_data.db"]
    second = run(BACKUP_SH, "--name", "second", "--cleanup", "--keep", "1")
    assert second.returncode == 0, second.stderr
    assert sorted(p.name for p in (app / "backups").glob("*.tar.gz")) == ["second.tar.gz"]


@needs_cli
def test_backup_usage_error_from_the_cli_exits_2(app: Path, run: Run) -> None:
    """An archive name the CLI refuses comes back as the CLI's exit 2 and its message."""
    result = run(BACKUP_SH, "--name", "../escape")
    assert result.returncode == 2
    assert "../escape" in result.stderr
    assert not list((app / "backups").glob("*.tar.gz"))


@needs_cli
def test_list_verify_and_restore_one_database(app: Path, run: Run) -> None:
    """--list shows the archive; --verify passes; --file NAME.tar.gz --user-db-only --force
    brings back the user database and leaves the arrow database alone."""
    user_db = app / "databases" / "user_data.db"
    arrow_db = app / "databases" / "arrow_database.db"
    assert run(BACKUP_SH, "--name", "before").returncode == 0
    assert "before" in run(RESTORE_SH, "--list").stdout
    verified = run(RESTORE_SH, "--verify", "--file", "before.tar.gz")
    assert verified.returncode == 0, verified.stderr

    original = users(user_db)
    add_user(user_db, "added-after-backup")
    arrow_before = arrow_db.read_bytes()
    restored = run(RESTORE_SH, "--file", "before.tar.gz", "--user-db-only", "--force")
    assert restored.returncode == 0, restored.stderr
    assert users(user_db) == original
    assert arrow_db.read_bytes() == arrow_before


@needs_cli
def test_restore_without_force_or_terminal_is_refused(app: Path, run: Run) -> None:
    """No terminal and no --force: the CLI refuses (exit 1) and nothing changes; --dry-run
    changes nothing either."""
    user_db = app / "databases" / "user_data.db"
    assert run(BACKUP_SH, "--name", "snap").returncode == 0
    add_user(user_db, "keep-me")
    count = users(user_db)
    refused = run(RESTORE_SH, "--file", str(app / "backups" / "snap.tar.gz"))
    assert refused.returncode == 1
    assert "--force" in refused.stderr
    dry = run(RESTORE_SH, "--file", "snap", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert users(user_db) == count


@needs_cli
def test_verify_of_a_corrupt_archive_fails(app: Path, run: Run) -> None:
    """A flipped byte in an archive makes --verify exit 1 naming the archive."""
    assert run(BACKUP_SH, "--name", "damaged").returncode == 0
    archive = app / "backups" / "damaged.tar.gz"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    result = run(RESTORE_SH, "--verify", "--file", str(archive))
    assert result.returncode == 1
    assert "damaged" in result.stderr


@needs_cli
def test_cli_is_found_on_path(app: Path, run: Run) -> None:
    """Without $BACKUP_SIDECAR_BIN the scripts use `backup-sidecar` from PATH."""
    venv_bin = str(Path(sys.executable).parent)
    path = f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"
    result = run(BACKUP_SH, "--name", "via-path", BACKUP_SIDECAR_BIN="", PATH=path)
    assert result.returncode == 0, result.stderr
    assert (app / "backups" / "via-path.tar.gz").is_file()


# --- against the real CLI and a real daemon ---------------------------------------------------


@pytest.fixture
def real_daemon(
    app: Path, script_env: dict[str, str], daemons: DaemonRunner, sock_dir: Path
) -> Path:
    """A real daemon on the demo databases and backup directory; its control socket."""
    databases = {
        name: Path(script_env[f"{name.upper()}_DATABASE_PATH"]) for name in ("arrow", "user")
    }
    config = quiet_config(
        backup_dir=app / "backups",
        databases=databases,
        socket_path=sock_dir / "control.sock",
        policies={"pre_restore": {"keep": 10}},
    )
    return daemons.start(config).socket


@needs_cli
def test_a_path_is_restored_from_that_file_never_a_same_named_archive(
    app: Path, tmp_path: Path, run: Run, real_daemon: Path
) -> None:
    """With a real daemon answering, `--file /elsewhere/x.tar.gz` verifies and restores THAT
    file (by the local CLI), not the daemon's `<backup_dir>/x.tar.gz` (before: the path was cut
    to `x` and the daemon restored its own archive of that name); `--file x` still goes through
    the daemon and restores the daemon's archive."""
    user_db = app / "databases" / "user_data.db"
    env = {"SIDECAR_SOCKET": str(real_daemon)}
    assert run(BACKUP_SH, "--name", "x", "--user-db-only").returncode == 0
    in_backup_dir = users(user_db)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    add_user(user_db, "only-in-the-other-archive")
    made = run(BACKUP_SH, "--name", "x", "--user-db-only", BACKUP_DIR=str(elsewhere))
    assert made.returncode == 0, made.stderr
    other = elsewhere / "x.tar.gz"
    add_user(user_db, "after-both")

    restored = run(RESTORE_SH, "--file", str(other), "--user-db-only", "--force", **env)
    assert restored.returncode == 0, restored.stderr
    assert "is a path: using the local CLI" in restored.stderr
    assert users(user_db) == in_backup_dir + 1

    named = run(RESTORE_SH, "--file", "x", "--user-db-only", "--force", **env)
    assert named.returncode == 0, named.stderr
    assert "through the sidecar daemon" in named.stderr
    assert users(user_db) == in_backup_dir

    data = bytearray(other.read_bytes())
    data[len(data) // 2] ^= 0xFF
    other.write_bytes(bytes(data))
    verified = run(RESTORE_SH, "--verify", "--file", str(other), **env)
    assert verified.returncode == 1, verified.stderr
    assert "corrupt" in verified.stderr
    refused = run(RESTORE_SH, "--file", str(other), "--user-db-only", "--force", **env)
    assert refused.returncode == 1
    assert users(user_db) == in_backup_dir
