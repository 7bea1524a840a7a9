"""The cheap paths of the commands that must start at once: the endpoints they read without
validating the configuration agree with the validated loader, or they defer to it; the lazy
group still lists every command; bench/startup.py runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from backup_sidecar.cli import main
from backup_sidecar.cli.endpoints import control_socket, health_target, healthz_url, url_of
from backup_sidecar.settings import load_settings
from support.cli import clean_env, run_cli
from support.foreign_http import foreign_http_server

CASES: list[tuple[str | None, dict[str, str]]] = [
    (None, {}),
    ("metrics: {host: 10.1.2.3, port: 9100}\ncontrol: {socket: /tmp/x/c.sock}\n", {}),
    ("metrics: {host: '::'}\n", {"SIDECAR_METRICS__PORT": "9200"}),
    ("metrics: {host: 'fe80::1', port: 1}\n", {"sidecar_control__socket": "/run/y.sock"}),
    ("backup_dir: /tmp\n", {"SIDECAR_METRICS__HOST": "localhost"}),
]


@pytest.mark.parametrize(("yaml_text", "env"), CASES)
def test_quick_endpoints_agree_with_the_validated_configuration(
    yaml_text: str | None, env: dict[str, str], tmp_path: Path
) -> None:
    """The URL and socket read cheaply are those of the validated settings."""
    config = None
    if yaml_text is not None:
        config = tmp_path / "sidecar.yaml"
        config.write_text(yaml_text)
    settings = load_settings(config, environ=env)
    assert healthz_url(config, env) == url_of(settings.metrics.host, settings.metrics.port)
    assert control_socket(config, env) == settings.control.socket


@pytest.mark.parametrize(
    ("yaml_text", "env"),
    [
        *CASES,
        ("metrics: {enabled: false, port: 1}\ncontrol: {socket: /tmp/x/c.sock}\n", {}),
        ("metrics: {enabled: Off}\ncontrol: {enabled: NO}\n", {}),
        ("metrics:\n  enabled: 'yes'\n", {"SIDECAR_METRICS__ENABLED": "F"}),
        ("metrics: {enabled: true}\n", {"SIDECAR_CONTROL__ENABLED": "0"}),
        (None, {"SIDECAR_METRICS__ENABLED": "off", "SIDECAR_CONTROL__SOCKET": "/s"}),
        ("metrics: {enabled: 0}\ncontrol: {enabled: 1, socket: /c}\n", {}),
    ],
)
def test_the_health_target_agrees_with_the_validated_configuration(
    yaml_text: str | None, env: dict[str, str], tmp_path: Path
) -> None:
    """What `healthcheck` asks, read cheaply (metrics.enabled included), is what the
    validated settings say: /healthz while metrics are on, else the control socket, else
    nothing ("")."""
    config = None
    if yaml_text is not None:
        config = tmp_path / "sidecar.yaml"
        config.write_text(yaml_text)
    settings = load_settings(config, environ=env)
    want: str | Path = ""
    if settings.metrics.enabled:
        want = url_of(settings.metrics.host, settings.metrics.port)
    elif settings.control.enabled:
        want = settings.control.socket
    assert health_target(config, env) == want


@pytest.mark.parametrize(
    "body", [b"OK\n", b"<html>it works</html>", b'{"status": "fine"}', b'["ok"]', b""]
)
def test_healthcheck_refuses_a_200_that_is_not_the_sidecars(body: bytes, tmp_path: Path) -> None:
    """Another HTTP server answering 200 on `metrics.port` (any body but the sidecar's JSON
    with "status": "ok"): `healthcheck` exits 1 with one line naming the URL, not 0."""
    with foreign_http_server(body) as port:
        config = tmp_path / "sidecar.yaml"
        config.write_text(f"metrics: {{host: 127.0.0.1, port: {port}}}\n")
        done = run_cli("healthcheck", config=config)
    assert done.returncode == 1, done.stdout
    assert done.stdout == "" and f"http://127.0.0.1:{port}/healthz: 200 but" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("yaml_text", "env"),
    [
        ("metrics: {enabled: maybe}\n", {}),
        (None, {"SIDECAR_METRICS__ENABLED": "2"}),
        ("metrics: [1, 2]\ncontrol: x\n", {}),
        ("metrics: {port: x}\ncontrol: {socket: 7}\n", {}),
        ("metrics: {port: 9100\n", {}),
        (None, {"SIDECAR_METRICS": '{"port": 1}', "SIDECAR_CONTROL": "{}"}),
        (None, {"SIDECAR_METRICS__PORT": "70000", "SIDECAR_CONTROL__SOCKET": ""}),
    ],
)
def test_anything_unusual_defers_to_the_validated_configuration(
    yaml_text: str | None, env: dict[str, str], tmp_path: Path
) -> None:
    """An odd value, a file that does not parse or a JSON section is left to load_settings."""
    config = None
    if yaml_text is not None:
        config = tmp_path / "sidecar.yaml"
        config.write_text(yaml_text)
    assert health_target(config, env) is None
    if "enabled" not in f"{yaml_text}{env}".lower():
        assert healthz_url(config, env) is None
        assert control_socket(config, env) is None


@pytest.mark.parametrize(("args", "code"), [(("healthcheck",), 1), (("ctl", "ping"), 2)])
def test_a_bad_configuration_is_still_reported(
    args: tuple[str, ...], code: int, tmp_path: Path
) -> None:
    """Deferred to the validated loader, a broken file is one error line naming it, with the
    exit code it had (healthcheck: 1, as Docker reserves 2; a configuration error: 2)."""
    config = tmp_path / "broken.yaml"
    config.write_text("metrics: {port: 9100\n")
    done = run_cli(*args, config=config)
    assert done.returncode == code, done.stderr
    assert str(config) in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "code"), [(("healthcheck",), 1), (("ctl", "ping"), 2)])
def test_a_duplicate_key_is_refused_as_config_check_refuses_it(
    args: tuple[str, ...], code: int, tmp_path: Path
) -> None:
    """`metrics: {host: 127.0.0.1, port: 1, port: P}` with another server answering 200 on P:
    the fast commands refuse the file naming the duplicate, as `config check` does, instead of
    taking the last value (PyYAML's) and calling that server healthy."""
    with foreign_http_server() as port:
        config = tmp_path / "dup.yaml"
        config.write_text(
            f"metrics: {{host: 127.0.0.1, port: 1, port: {port}}}\n"
            f"control: {{socket: {tmp_path}/c.sock, socket: {tmp_path}/d.sock}}\n"
        )
        done = run_cli(*args, config=config)
    assert done.returncode == code, done.stdout
    assert str(config) in done.stderr and "duplicate key" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stdout == ""


def test_the_lazy_group_lists_every_command() -> None:
    """`--help` still lists the commands of every module (they are imported on demand)."""
    result = CliRunner().invoke(main, ["--help"], env=clean_env())
    assert result.exit_code == 0
    for name in ("backup", "list", "restore", "run", "start", "healthcheck", "ctl", "init"):
        assert f"  {name} " in result.output


def test_bench_startup_quick_mode() -> None:
    """One round of bench/startup.py gives a time and a ratio for each command."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.startup", "--runs", "1"],
        cwd=Path(__file__).resolve().parents[1],
        env=clean_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    assert set(row["commands"]) == {"--version", "healthcheck", "ctl ping"}
    assert all(c["wall_ratio"] > 0 < c["cpu_ratio"] for c in row["commands"].values())
