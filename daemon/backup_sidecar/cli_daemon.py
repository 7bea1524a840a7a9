"""CLI commands that talk to or are the daemon: `run`, `start`, `healthcheck`, `ctl ...`,
`config check`.

Kept apart from cli.py so that module stays small; like it, only these commands print or exit.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from backup_sidecar.cli import Context, _errors, _fail, error_json, json_option, main
from backup_sidecar.errors import RestoreRefusedError


@main.command()
@click.pass_obj
def run(ctx: Context) -> None:
    """Run the daemon: scheduler, health watcher, metrics endpoint and control socket."""
    from backup_sidecar.service.core import Service  # noqa: PLC0415
    from backup_sidecar.settings import build_runtime_config  # noqa: PLC0415

    with _errors(ctx):
        settings, paths = build_runtime_config(ctx.config, environ=os.environ, cwd=Path.cwd())
        config_path = ctx.config or (
            Path.cwd() / os.environ["SIDECAR_CONFIG"] if os.environ.get("SIDECAR_CONFIG") else None
        )
        service = Service(
            settings, paths, config_path=config_path, environ=os.environ, cwd=Path.cwd()
        )
        sys.exit(service.run())


@main.command()
@click.pass_context
def start(click_ctx: click.Context) -> None:
    """The container's command: `init`, then `run` in this same process (signals reach it)."""
    from backup_sidecar.cli_data import init  # noqa: PLC0415

    click_ctx.invoke(init)  # exits 1 on a failed database check: never run on a bad start
    click_ctx.invoke(run)


def _healthz_url(ctx: Context) -> str:
    """The configured metrics endpoint's /healthz, asked on loopback when it listens on all."""
    from backup_sidecar.settings import load_settings  # noqa: PLC0415

    metrics = load_settings(ctx.config, environ=os.environ).metrics
    host = "127.0.0.1" if metrics.host in ("0.0.0.0", "") else metrics.host  # noqa: S104
    host = "[::1]" if host == "::" else f"[{host}]" if ":" in host else host
    return f"http://{host}:{metrics.port}/healthz"


@main.command()
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
        _fail(str(exc), 1)
    if not url.startswith(("http://", "https://")):
        _fail(f"--url {url!r}: not an http(s) URL", 1)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (scheme checked)
            body = resp.read().decode("utf-8", "replace").strip()
    except urllib.error.HTTPError as exc:
        _fail(f"{url}: {exc.code} {exc.read().decode('utf-8', 'replace').strip()}", 1)
    except (urllib.error.URLError, OSError) as exc:
        _fail(f"{url}: {getattr(exc, 'reason', exc)}", 1)
    click.echo(f"{url}: {body}")


@main.group()
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(path_type=Path),
    envvar="SIDECAR_SOCKET",
    help="Control socket (default: the configured control.socket).",
)
@click.option("--timeout", type=float, default=None, help="Seconds to wait for the answer.")
@click.pass_obj
def ctl(ctx: Context, socket_path: Path | None, timeout: float | None) -> None:
    """Send a request to a running daemon over its control socket."""
    ctx.socket = socket_path  # type: ignore[attr-defined]
    ctx.timeout = timeout  # type: ignore[attr-defined]


def _socket(ctx: Context) -> Path:
    explicit: Path | None = getattr(ctx, "socket", None)
    if explicit is not None:
        return explicit
    from backup_sidecar.settings import load_settings  # noqa: PLC0415

    config = ctx.config or (
        Path(os.environ["SIDECAR_CONFIG"]) if os.environ.get("SIDECAR_CONFIG") else None
    )
    return load_settings(config, environ=os.environ).control.socket


def _request(ctx: Context, request: dict[str, Any], *, as_json: bool) -> dict[str, Any]:
    from backup_sidecar.control.client import ControlClient  # noqa: PLC0415
    from backup_sidecar.control.protocol import ControlError  # noqa: PLC0415
    from backup_sidecar.progress import progress_bar  # noqa: PLC0415

    client = ControlClient(_socket(ctx), timeout_s=getattr(ctx, "timeout", None))
    try:
        with progress_bar(enabled=not as_json) as progress:
            return client.request(request, on_progress=progress)
    except ControlError as exc:
        if as_json:
            click.echo(json.dumps(error_json(exc), indent=2))
        _fail(
            f"daemon refused {request['op']}: {exc.code}: {exc.message}",
            2 if exc.code == "bad_request" else 1,
        )


def _print(as_json: bool, result: dict[str, Any]) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            click.echo(f"{key}:")
            for item in value:
                click.echo("  " + "  ".join(f"{k}={v}" for k, v in item.items() if k != "path"))
        else:
            click.echo(
                f"{key}: {value if not isinstance(value, list) else ', '.join(map(str, value))}"
            )


@ctl.command("ping")
@json_option
@click.pass_obj
def ctl_ping(ctx: Context, as_json: bool) -> None:
    """Check that the daemon answers."""
    with _errors(ctx, as_json=as_json):
        _print(as_json, _request(ctx, {"op": "ping"}, as_json=as_json))


@ctl.command("status")
@json_option
@click.pass_obj
def ctl_status(ctx: Context, as_json: bool) -> None:
    """Health, paths and next runs of the daemon."""
    with _errors(ctx, as_json=as_json):
        _print(as_json, _request(ctx, {"op": "status"}, as_json=as_json))


@ctl.command("list")
@json_option
@click.pass_obj
def ctl_list(ctx: Context, as_json: bool) -> None:
    """Archives, newest first, as the daemon sees them."""
    with _errors(ctx, as_json=as_json):
        _print(as_json, _request(ctx, {"op": "list"}, as_json=as_json))


@ctl.command("backup")
@click.option("--policy", default="manual", show_default=True)
@click.option("--db", "dbs", multiple=True, metavar="NAME")
@click.option("--wait", is_flag=True, help="Wait for a running operation instead of failing busy.")
@json_option
@click.pass_obj
def ctl_backup(ctx: Context, policy: str, dbs: tuple[str, ...], wait: bool, as_json: bool) -> None:
    """Ask the daemon for a backup now."""
    with _errors(ctx, as_json=as_json):
        req = {"op": "backup", "policy": policy, "databases": list(dbs) or None, "wait": wait}
        _print(as_json, _request(ctx, req, as_json=as_json))


@ctl.command("verify")
@click.argument("archive")
@json_option
@click.pass_obj
def ctl_verify(ctx: Context, archive: str, as_json: bool) -> None:
    """Ask the daemon to verify an archive (by name)."""
    with _errors(ctx, as_json=as_json):
        _print(as_json, _request(ctx, {"op": "verify", "archive": archive}, as_json=as_json))


@ctl.command("restore")
@click.argument("archive")
@click.option("--db", "dbs", multiple=True, metavar="NAME")
@click.option("--force", "--confirm", "force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True)
@click.option("--wait", is_flag=True)
@json_option
@click.pass_obj
def ctl_restore(
    ctx: Context,
    archive: str,
    dbs: tuple[str, ...],
    force: bool,
    dry_run: bool,
    wait: bool,
    as_json: bool,
) -> None:
    """Ask the daemon to restore an archive into the live databases."""
    with _errors(ctx, as_json=as_json):
        if not force and not dry_run:
            if not sys.stdin.isatty():
                raise RestoreRefusedError("no terminal to confirm on; pass --force to restore")
            if not click.confirm(f"Restore {archive} into the live databases?", err=True):
                raise RestoreRefusedError("not confirmed")
        req = {
            "op": "restore",
            "archive": archive,
            "databases": list(dbs) or None,
            "confirm": True,
            "dry_run": dry_run,
            "wait": wait,
        }
        _print(as_json, _request(ctx, req, as_json=as_json))


@ctl.command("prune")
@click.option("--policy")
@click.option("--keep", type=int)
@click.option("--dry-run", is_flag=True)
@json_option
@click.pass_obj
def ctl_prune(
    ctx: Context, policy: str | None, keep: int | None, dry_run: bool, as_json: bool
) -> None:
    """Ask the daemon to apply retention."""
    with _errors(ctx, as_json=as_json):
        req = {"op": "prune", "policy": policy, "keep": keep, "dry_run": dry_run}
        _print(as_json, _request(ctx, req, as_json=as_json))


@ctl.command("scrub")
@json_option
@click.pass_obj
def ctl_scrub(ctx: Context, as_json: bool) -> None:
    """Ask the daemon to read every archive to its end and mark the damaged ones."""
    with _errors(ctx):
        _print(as_json, _request(ctx, {"op": "scrub"}, as_json=as_json))


@main.group("config")
def config_group() -> None:
    """Configuration tools."""


@config_group.command("check")
@click.argument("file", type=click.Path(path_type=Path))
@click.pass_obj
def config_check(ctx: Context, file: Path) -> None:
    """Validate a YAML file and print the next run time of every policy."""
    from backup_sidecar.cron import next_fire_times  # noqa: PLC0415
    from backup_sidecar.settings import build_runtime_config  # noqa: PLC0415

    with _errors(ctx):
        settings, paths = build_runtime_config(file, environ=os.environ, cwd=Path.cwd())
        now = datetime.now(UTC)
        click.echo(f"{file}: ok")
        click.echo(f"backup_dir: {paths.backup_dir}")
        for spec in paths.databases:
            click.echo(f"database {spec.name}: {spec.path}")
        for name, policy in settings.policies.items():
            trigger = policy.trigger
            if trigger is None:
                click.echo(f"policy {name}: keep {policy.keep}, not scheduled")
                continue
            nxt = next_fire_times(trigger, timezone=settings.tzinfo, now=now, count=1)
            when = nxt[0].isoformat() if nxt else "never"
            click.echo(f"policy {name}: keep {policy.keep}, next run {when}")
        if settings.scrub.trigger is not None:
            nxt = next_fire_times(settings.scrub.trigger, timezone=settings.tzinfo, now=now)
            click.echo(f"scrub: next run {nxt[0].isoformat() if nxt else 'never'}")
