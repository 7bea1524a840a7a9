"""The image's default command, run without an engine: ENTRYPOINT + CMD exactly as written in
Dockerfile.sidecar, as uid 1000, against a temp tree laid out like the container's volumes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.dockerfile import Instruction, VolumeTree, final_stage, image_command
from support.metrics import free_port, http_get
from support.paths import ROOT
from support.waiting import wait_until

VENV_BIN = Path(sys.executable).parent
COMPOSE_CONFIG = ROOT / "config" / "sidecar.compose.yaml"
DEADLINE_S = 60.0


def healthz(port: int) -> int:
    return http_get(f"http://127.0.0.1:{port}/healthz")[0]


def as_user(tree: VolumeTree) -> list[str]:
    """`setpriv` switching to the image's uid/gid with no supplementary groups."""
    closed = [p for p in (ROOT, *ROOT.parents) if not p.stat().st_mode & 0o001]
    if closed:  # e.g. a checkout under /root (0700): no other user can reach its venv
        pytest.skip(f"uid {tree.uid} cannot reach the checkout: {closed[0]} is not o+x")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv not found (util-linux)")
    return [setpriv, f"--reuid={tree.uid}", f"--regid={tree.gid}", "--clear-groups"]


def container_env(tree: VolumeTree, *, port: int) -> dict[str, str]:
    """The image's ENV and the compose service's environment, with paths moved into the tree.

    The socket and the metrics address are set the way an operator would override them
    (SIDECAR_ variables), so the configuration file is the compose one, unchanged.
    """
    return {
        "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tree.app),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "SIDECAR_CONFIG": str(COMPOSE_CONFIG),
        "SIDECAR_LOG_FORMAT": "json",
        "ARROW_DATABASE_PATH": str(tree.arrow_db),
        "USER_DATABASE_PATH": str(tree.user_db),
        "BACKUP_DIR": str(tree.backups),
        "FLASK_ENV": "production",
        "SIDECAR_CONTROL__SOCKET": str(tree.socket),
        "SIDECAR_METRICS__HOST": "127.0.0.1",  # the tests listen on loopback only
        "SIDECAR_METRICS__PORT": str(port),
    }


@dataclass
class Container:
    proc: subprocess.Popen[str]
    env: dict[str, str]
    port: int
    log: list[str]

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in list(self.log):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found


@pytest.fixture
def container(dockerfile: list[Instruction], volume_tree: VolumeTree) -> Iterator[Container]:
    """The image's command line as uid 1000 in the volume tree; killed at teardown if alive."""
    import threading

    command = image_command(dockerfile)
    port = free_port()
    env = container_env(volume_tree, port=port)
    probe = subprocess.run(
        [*as_user(volume_tree), command[0], "--version"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, f"uid {volume_tree.uid} cannot run the venv: {probe.stderr}"
    workdir = next(i.args for i in final_stage(dockerfile) if i.keyword == "WORKDIR")
    assert workdir == "/app"
    proc = subprocess.Popen(
        [*as_user(volume_tree), *command],
        env=env, cwd=volume_tree.app, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    log: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: log.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:
        yield Container(proc, env, port, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)
        proc.stdout.close()


def test_image_command_starts_healthy_as_uid_1000_and_stops_on_sigterm(
    container: Container, volume_tree: VolumeTree, dockerfile: list[Instruction]
) -> None:
    """`backup-sidecar start` as uid 1000 on empty volumes: init creates the databases, the
    daemon serves /healthz 200 (the HEALTHCHECK's own command exits 0), takes the catch-up
    backups into the backups volume as uid 1000, opens the control socket, and on SIGTERM
    stops with exit code 0 and removes the socket."""
    port = container.port
    wait_until(
        lambda: container.proc.poll() is not None or healthz(port) == 200,
        what="/healthz 200",
        timeout=DEADLINE_S,
    )
    assert container.proc.poll() is None, "\n".join(container.log[-20:])

    health_cmd = next(i for i in final_stage(dockerfile) if i.keyword == "HEALTHCHECK")
    check = subprocess.run(
        [*as_user(volume_tree), *health_cmd.exec_form()],
        env=container.env, cwd=volume_tree.app, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert '"status": "ok"' in check.stdout

    for db in (volume_tree.arrow_db, volume_tree.user_db):
        assert db.stat().st_uid == volume_tree.uid, db
    archives = wait_until(
        lambda: list(volume_tree.backups.glob("*.tar.gz")),
        what="a catch-up backup",
        timeout=DEADLINE_S,
    )
    assert all(a.stat().st_uid == volume_tree.uid for a in archives)
    assert volume_tree.socket.is_socket()
    assert oct(volume_tree.socket.stat().st_mode & 0o777) == "0o660"

    container.proc.send_signal(signal.SIGTERM)
    assert container.proc.wait(timeout=60) == 0, "\n".join(container.log[-20:])
    events = [e.get("event") for e in container.events()]
    assert "database_ready" in events  # init ran first, in the same process
    assert events.index("database_ready") < events.index("daemon_started")
    assert events[-1] == "daemon_stopped"
    assert not volume_tree.socket.exists()


def test_image_command_refuses_to_run_on_a_damaged_database(
    dockerfile: list[Instruction], volume_tree: VolumeTree
) -> None:
    """When init finds a database that fails its integrity check, `start` exits 1 before the
    daemon starts (the container restarts instead of backing up garbage)."""
    volume_tree.user_db.write_bytes(b"not a database" * 100)
    os.chown(volume_tree.user_db, volume_tree.uid, volume_tree.gid)
    result = subprocess.run(
        [*as_user(volume_tree), *image_command(dockerfile)],
        env=container_env(volume_tree, port=free_port()), cwd=volume_tree.app,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "database_check_failed" in result.stderr
    assert "daemon_started" not in result.stderr


def test_healthcheck_fails_with_one_line_when_nothing_answers(volume_tree: VolumeTree) -> None:
    """`backup-sidecar healthcheck` exits 1 (never Docker's reserved 2) naming the URL when no
    daemon listens, and when the configuration cannot be read."""
    env = container_env(volume_tree, port=free_port())
    result = subprocess.run(
        [str(VENV_BIN / "backup-sidecar"), "healthcheck", "--timeout", "2"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert f"http://127.0.0.1:{env['SIDECAR_METRICS__PORT']}/healthz" in result.stderr
    bad = env | {"SIDECAR_CONFIG": str(volume_tree.root / "missing.yaml")}
    result = subprocess.run(
        [str(VENV_BIN / "backup-sidecar"), "healthcheck"],
        env=bad, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "missing.yaml" in result.stderr


def test_healthcheck_reports_an_unhealthy_daemon(tmp_path: Path) -> None:
    """A /healthz that answers 503 makes `healthcheck --url` exit 1 and print the reasons."""
    import http.server
    import threading

    class Unhealthy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"status": "unhealthy", "reasons": ["database \'user\' is unhealthy"]}'
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Unhealthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/healthz"
        result = subprocess.run(
            [str(VENV_BIN / "backup-sidecar"), "healthcheck", "--url", url],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 1
    assert "503" in result.stderr and "unhealthy" in result.stderr
