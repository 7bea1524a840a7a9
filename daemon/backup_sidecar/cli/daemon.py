"""The daemon's commands: `run` (it), `start` (the container's command) and `healthcheck`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from backup_sidecar.cli.context import Context
from backup_sidecar.cli.output import fail, reported_errors


@click.command()
@click.pass_obj
def run(ctx: Context) -> None:
    """Run the daemon: scheduler, health watcher, metrics endpoint and control socket."""
    from backup_sidecar.service.core import Service  # noqa: PLC0415
    from backup_sidecar.settings import load_configuration  # noqa: PLC0415

    with reported_errors(ctx):
        settings, paths = load_configuration(ctx.config, environ=os.environ, cwd=Path.cwd())
        service = Service(
            settings, paths, config_path=ctx.config, environ=os.environ, cwd=Path.cwd()
        )
        sys.exit(service.run())


@click.command()
@click.option(
    "--restore-from-offsite",
    "from_offsite",
    is_flag=True,
    help="As `init --restore-from-offsite`: databases without content come back from offsite.",
)
@click.pass_context
def start(click_ctx: click.Context, from_offsite: bool) -> None:
    """The container's command: `init`, then `run` in this same process (signals reach it)."""
    from backup_sidecar.cli.data import init  # noqa: PLC0415 (keep healthcheck fast)

    # exits 1 on a failed database check or offsite restore: never run on a bad start
    click_ctx.invoke(init, from_offsite=from_offsite)
    click_ctx.invoke(run)


def _health_target(ctx: Context) -> str | Path:
    """What to ask: the configured metrics endpoint's /healthz (asked on loopback when it
    listens on all), else (metrics disabled) the control socket; "" when neither is enabled."""
    from backup_sidecar.cli.endpoints import health_target, url_of  # noqa: PLC0415

    quick = health_target(ctx.config, os.environ)
    if quick is not None:
        return quick
    ctx.configure_logging()
    from backup_sidecar.settings import load_settings  # noqa: PLC0415

    settings = load_settings(ctx.config, environ=os.environ)
    if settings.metrics.enabled:
        return url_of(settings.metrics.host, settings.metrics.port)
    return settings.control.socket if settings.control.enabled else ""


def _sidecar_ok(body: str) -> bool:
    """Whether ``body`` is the sidecar's healthy /healthz answer (JSON, "status": "ok"): any
    other server answering 200 on that port is not this daemon."""
    import json  # noqa: PLC0415

    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and doc.get("status") == "ok"


def _ask_socket(path: Path, timeout: float) -> None:
    """The daemon's health over its control socket (`status`): exit 0 healthy, else 1."""
    from backup_sidecar.cli.ping import health  # noqa: PLC0415
    from backup_sidecar.errors import SidecarError  # noqa: PLC0415

    try:
        answer = health(path, timeout_s=timeout)
    except SidecarError as exc:
        fail(str(exc), 1)
    if not answer["healthy"]:
        fail(f"{path}: unhealthy: {'; '.join(answer['reasons']) or 'no reason given'}", 1)
    click.echo(f'{path}: {{"status": "ok"}}')


@click.command()
@click.option("--url", help="The /healthz URL (default: from the configured metrics host/port).")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds to wait.")
@click.pass_obj
def healthcheck(ctx: Context, url: str | None, timeout: float) -> None:
    """Exit 0 if the daemon says it is healthy, else 1 (the container's HEALTHCHECK): its
    /healthz answers 200 with the sidecar's `{"status": "ok"}`, or, with the metrics endpoint
    disabled, its control socket's `status` says healthy.

    Every failure exits 1, a bad configuration too: Docker reserves exit code 2.
    """
    from backup_sidecar.errors import SidecarError  # noqa: PLC0415

    try:
        target = url or _health_target(ctx)
    except SidecarError as exc:
        fail(str(exc), 1)
    if isinstance(target, Path):
        _ask_socket(target, timeout)
        return
    if not target:
        fail("nothing to ask: both the metrics endpoint and the control socket are disabled", 1)
    url = target
    if not url.startswith(("http://", "https://")):
        fail(f"--url {url!r}: not an http(s) URL", 1)
    from backup_sidecar.cli.probe import get  # noqa: PLC0415

    try:
        status, body = get(url, timeout=timeout)
    except OSError as exc:
        fail(f"{url}: {exc}", 1)
    if status != 200:
        fail(f"{url}: {status} {body}", 1)
    if not _sidecar_ok(body):
        shown = " ".join(body.split())[:200]
        fail(f"{url}: 200 but not the sidecar's /healthz answer (another server?): {shown!r}", 1)
    click.echo(f"{url}: {body}")


COMMANDS = (run, start, healthcheck)
