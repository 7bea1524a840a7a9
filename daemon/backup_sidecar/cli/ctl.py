"""`ctl ...`: send one request to a running daemon over its control socket and print the answer."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from backup_sidecar.cli.context import Context
from backup_sidecar.cli.options import json_option
from backup_sidecar.cli.output import error_json, fail, reported_errors
from backup_sidecar.errors import ControlError, RestoreRefusedError


@click.group()
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(path_type=Path),
    envvar="SIDECAR_SOCKET",
    help="Control socket (default: the configured control.socket).",
)
@click.option("--timeout", type=float, default=None, help="Seconds to wait for the answer.")
@click.pass_context
def ctl(click_ctx: click.Context, socket_path: Path | None, timeout: float | None) -> None:
    """Send a request to a running daemon over its control socket."""
    ctx = click_ctx.find_object(Context)
    assert ctx is not None  # the group's callback made it
    ctx.socket = socket_path
    ctx.timeout = timeout
    if click_ctx.invoked_subcommand != "ping":  # ping must start at once: see cli/ping.py
        ctx.configure_logging()


def _socket(ctx: Context) -> Path:
    if ctx.socket is not None:
        return ctx.socket
    from backup_sidecar.cli.endpoints import control_socket  # noqa: PLC0415

    quick = control_socket(ctx.config, os.environ)
    if quick is not None:
        return quick
    ctx.configure_logging()
    from backup_sidecar.settings import load_settings  # noqa: PLC0415

    return load_settings(ctx.config, environ=os.environ).control.socket


def _request(ctx: Context, request: dict[str, Any], *, as_json: bool) -> dict[str, Any]:
    """The daemon's answer, parsed into the op's result model (and dumped back for printing)."""
    from backup_sidecar.control.client import ControlClient  # noqa: PLC0415
    from backup_sidecar.progress import progress_bar  # noqa: PLC0415

    client = ControlClient(_socket(ctx), timeout_s=ctx.timeout)
    try:
        with progress_bar(enabled=not as_json) as progress:
            return client.call(request, on_progress=progress).model_dump(mode="json")
    except ControlError as exc:
        if as_json:
            click.echo(json.dumps(error_json(exc), indent=2))
        fail(
            f"daemon refused {request['op']}: {exc.code}: {exc.message}",
            2 if exc.code == "bad_request" else 1,
        )


def _text(value: object) -> str:
    """A field as text: a list (a pruned archive's ``reasons``) joined, not its repr."""
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _print(as_json: bool, result: dict[str, Any], op: str | None = None) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    if op in ("list", "status"):  # the same tables as `list` (and one for the status)
        from backup_sidecar.cli.tables import archive_table, status_table  # noqa: PLC0415

        now = datetime.now(UTC)
        lines = archive_table(result["archives"], now=now) if op == "list" else status_table(result)
        click.echo("\n".join(lines))
        return
    for key, value in result.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            click.echo(f"{key}:")
            for item in value:
                click.echo(
                    "  " + "  ".join(f"{k}={_text(v)}" for k, v in item.items() if k != "path")
                )
        elif isinstance(value, dict) and value and isinstance(next(iter(value.values())), dict):
            click.echo(f"{key}:")
            for name, item in value.items():
                click.echo(f"  {name}: " + "  ".join(f"{k}={v}" for k, v in item.items()))
        elif isinstance(value, dict):  # e.g. a restore's database -> archive map
            click.echo(f"{key}:" + ("" if value else " none"))
            for name, item in value.items():
                click.echo(f"  {name}: {_text(item)}")
        else:
            click.echo(
                f"{key}: {value if not isinstance(value, list) else ', '.join(map(str, value))}"
            )


def _send(
    ctx: Context, request: dict[str, Any], *, as_json: bool, json_errors: bool = True
) -> None:
    """Ask, print the answer; a failure before the daemon answered is reported in JSON too only
    with ``json_errors`` (`ctl scrub` never did)."""
    with reported_errors(ctx, as_json=as_json and json_errors):
        _print(as_json, _request(ctx, request, as_json=as_json), request["op"])


def _plain(
    name: str, doc: str, *, json_errors: bool = True, op: str | None = None
) -> click.Command:
    """A `ctl` command that sends an op without arguments (``op``: when not its name)."""
    op = op or name

    @click.command(name, help=doc)
    @json_option
    @click.pass_obj
    def command(ctx: Context, as_json: bool) -> None:
        _send(ctx, {"op": op}, as_json=as_json, json_errors=json_errors)

    return command


@click.command("ping")
@json_option
@click.pass_obj
def ctl_ping(ctx: Context, as_json: bool) -> None:
    """Check that the daemon answers."""
    from backup_sidecar.cli.ping import ping  # noqa: PLC0415

    with reported_errors(ctx, as_json=as_json):
        try:
            result = ping(_socket(ctx), timeout_s=ctx.timeout)
        except ControlError as exc:
            if as_json:
                click.echo(json.dumps(error_json(exc), indent=2))
            fail(
                f"daemon refused ping: {exc.code}: {exc.message}",
                2 if exc.code == "bad_request" else 1,
            )
        _print(as_json, result)


@click.command("backup")
@click.option("--policy", default="manual", show_default=True, help="Policy the archive is for.")
@click.option("--db", "dbs", multiple=True, metavar="NAME", help="Database by name (repeatable).")
@click.option("--wait", is_flag=True, help="Wait for a running operation instead of failing busy.")
@json_option
@click.pass_obj
def ctl_backup(ctx: Context, policy: str, dbs: tuple[str, ...], wait: bool, as_json: bool) -> None:
    """Ask the daemon for a backup now."""
    _send(
        ctx,
        {"op": "backup", "policy": policy, "databases": list(dbs) or None, "wait": wait},
        as_json=as_json,
    )


@click.command("verify")
@click.argument("archive")
@json_option
@click.pass_obj
def ctl_verify(ctx: Context, archive: str, as_json: bool) -> None:
    """Ask the daemon to verify an archive (by name)."""
    _send(ctx, {"op": "verify", "archive": archive}, as_json=as_json)


@click.command("export")
@click.argument("archive")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The new archive file as the daemon sees it (made absolute here); never replaced.",
)
@json_option
@click.pass_obj
def ctl_export(ctx: Context, archive: str, out: Path, as_json: bool) -> None:
    """Ask the daemon to write incremental backup ARCHIVE as a standalone .tar.gz."""
    _send(ctx, {"op": "export", "archive": archive, "out": str(out.absolute())}, as_json=as_json)


@click.command("restore")
@click.argument("archive", required=False)
@click.option("--db", "dbs", multiple=True, metavar="NAME", help="Database by name (repeatable).")
@click.option("--force", "--confirm", "force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--wait", is_flag=True, help="Wait for a running operation instead of failing busy.")
@click.option("--from-offsite", is_flag=True, help="The daemon downloads it from offsite first.")
@click.option(
    "--latest", is_flag=True, help="With --from-offsite: each database from its newest copy."
)
@json_option
@click.pass_obj
def ctl_restore(
    ctx: Context,
    archive: str | None,
    dbs: tuple[str, ...],
    force: bool,
    dry_run: bool,
    wait: bool,
    from_offsite: bool,
    latest: bool,
    as_json: bool,
) -> None:
    """Ask the daemon to restore an archive into the live databases (with --from-offsite:
    ARCHIVE or --latest, downloaded from the offsite store by the daemon first)."""
    from backup_sidecar.cli.restore import which_archive  # noqa: PLC0415

    with reported_errors(ctx, as_json=as_json):
        which_archive(archive, latest=latest, from_offsite=from_offsite)
        what = archive or "the newest offsite copy of each database"
        if not force and not dry_run:
            if not sys.stdin.isatty():
                raise RestoreRefusedError("no terminal to confirm on; pass --force to restore")
            if not click.confirm(f"Restore {what} into the live databases?", err=True):
                raise RestoreRefusedError("not confirmed")
        req: dict[str, Any] = {"op": "restore", "archive": archive}
        if from_offsite:
            req.update({"from": "offsite", "latest": latest})
        req |= {
            "databases": list(dbs) or None,
            "confirm": True,
            "dry_run": dry_run,
            "wait": wait,
        }
        _print(as_json, _request(ctx, req, as_json=as_json))


@click.command("prune")
@click.option("--policy", help="Only this policy (default: every policy).")
@click.option("--keep", type=int, help="Archives to keep per policy (default: the policy's keep).")
@click.option("--dry-run", is_flag=True, help="Print what would be deleted; delete nothing.")
@json_option
@click.pass_obj
def ctl_prune(
    ctx: Context, policy: str | None, keep: int | None, dry_run: bool, as_json: bool
) -> None:
    """Ask the daemon to apply retention."""
    _send(ctx, {"op": "prune", "policy": policy, "keep": keep, "dry_run": dry_run}, as_json=as_json)


for _command in (
    ctl_ping,
    _plain("status", "Health, paths and next runs of the daemon."),
    _plain("list", "Archives, newest first, as the daemon sees them."),
    ctl_backup,
    ctl_verify,
    ctl_export,
    ctl_restore,
    ctl_prune,
    _plain(
        "offsite-status", "Lease, pending uploads and newest copies offsite.", op="offsite_status"
    ),
    _plain(
        "scrub",
        "Ask the daemon to read every archive to its end and mark the damaged ones.",
        json_errors=False,
    ),
):
    ctl.add_command(_command)

COMMANDS = (ctl,)
