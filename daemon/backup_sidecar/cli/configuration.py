"""`config check`: validate a configuration file and show when each policy runs next;
`config hash-password`: the value for the variable `ui.password_hash_env` names."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from backup_sidecar.cli.context import Context
from backup_sidecar.cli.output import reported_errors


@click.group("config")
def config_group() -> None:
    """Configuration tools."""


@config_group.command("check")
@click.argument("file", type=click.Path(path_type=Path))
@click.pass_obj
def config_check(ctx: Context, file: Path) -> None:
    """Validate a YAML file and print the next run time of every policy."""
    from backup_sidecar.cron import next_fire_times  # noqa: PLC0415
    from backup_sidecar.settings import load_configuration  # noqa: PLC0415

    with reported_errors(ctx):
        settings, paths = load_configuration(file, environ=os.environ, cwd=Path.cwd())
        now = datetime.now(UTC)
        click.echo(f"{file}: ok")
        click.echo(f"backup_dir: {paths.backup_dir}")
        for spec in paths.databases:
            click.echo(f"database {spec.name}: {spec.path}")
        for name, policy in settings.policies.items():
            trigger = policy.trigger
            if trigger is None:
                click.echo(f"policy {name}: {policy.retention_text}, not scheduled")
                continue
            nxt = next_fire_times(trigger, timezone=settings.tzinfo, now=now, count=1)
            when = nxt[0].isoformat() if nxt else "never"
            click.echo(f"policy {name}: {policy.retention_text}, next run {when}")
        if settings.offsite is not None:
            encryption = settings.offsite.encryption
            how = (
                f"encrypted to {len(encryption.recipients)} age recipient(s)"
                if encryption
                else "plaintext"
            )
            click.echo(f"offsite: {settings.offsite.url} ({how})")
        if settings.notify.active:
            click.echo(f"notify: {settings.notify.summary}")
        if settings.scrub.trigger is not None:
            nxt = next_fire_times(settings.scrub.trigger, timezone=settings.tzinfo, now=now)
            click.echo(f"scrub: next run {nxt[0].isoformat() if nxt else 'never'}")
        if settings.ui.enabled:
            auth = "authenticated" if settings.ui.authenticated else "no authentication"
            click.echo(f"ui: http://{settings.ui.listen}/ ({auth})")


@config_group.command("hash-password")
def hash_password_command() -> None:
    """Read a password on stdin (never an argument: argv is visible to every user) and print
    its scrypt hash for the variable `ui.password_hash_env` names."""
    from backup_sidecar.service.ui_auth import hash_password  # noqa: PLC0415

    given = sys.stdin.read()
    password = given.removesuffix("\n").removesuffix("\r")
    if "\n" in password or "\r" in password:
        raise click.UsageError("more than one line on stdin: give the password as one line")
    if not password:
        raise click.UsageError("no password on stdin")
    click.echo(hash_password(password))


COMMANDS = (config_group,)
