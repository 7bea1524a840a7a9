"""The daemon's commands: `run` (it), `start` (the container's command) and `healthcheck`."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import click

from backup_sidecar.cli.context import Context
from backup_sidecar.cli.data import init
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
    # exits 1 on a failed database check or offsite restore: never run on a bad start
    click_ctx.invoke(init, from_offsite=from_offsite)
    click_ctx.invoke(run)


def _healthz_url(ctx: Context) -> str:
    """The configured metrics endpoint's /healthz, asked on loopback when it listens on all."""
    from backup_sidecar.settings import load_settings  # noqa: PLC0415

    metrics = load_settings(ctx.config, environ=os.environ).metrics
    host = "127.0.0.1" if metrics.host in ("0.0.0.0", "") else metrics.host  # noqa: S104
    host = "[::1]" if host == "::" else f"[{host}]" if ":" in host else host
    return f"http://{host}:{metrics.port}/healthz"


@click.command()
@click.option("--url", help="The /healthz URL (default: from the configured metrics host/port).")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds to wait.")
@click.pass_obj
def healthcheck(ctx: Context, url: str | None, timeout: float) -> None:
    """Exit 0 if the daemon's /healthz answers 200, else 1 (the container's HEALTHCHECK).

    Every failure exits 1, a bad configuration too: Docker reserves exit code 2.
    """
    from backup_sidecar.errors import SidecarError  # noqa: PLC0415

    try:
        url = url or _healthz_url(ctx)
    except SidecarError as exc:
        fail(str(exc), 1)
    if not url.startswith(("http://", "https://")):
        fail(f"--url {url!r}: not an http(s) URL", 1)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (scheme checked)
            body = resp.read().decode("utf-8", "replace").strip()
    except urllib.error.HTTPError as exc:
        fail(f"{url}: {exc.code} {exc.read().decode('utf-8', 'replace').strip()}", 1)
    except (urllib.error.URLError, OSError) as exc:
        fail(f"{url}: {getattr(exc, 'reason', exc)}", 1)
    click.echo(f"{url}: {body}")


COMMANDS = (run, start, healthcheck)
