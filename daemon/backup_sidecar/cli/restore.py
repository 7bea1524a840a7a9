"""`restore`: replace the live databases with an archive's content, after confirmation."""

from __future__ import annotations

import sys
from dataclasses import replace

import click

from backup_sidecar import jobs
from backup_sidecar.cli.context import Context
from backup_sidecar.cli.options import DatabaseChoice, database_options, json_option
from backup_sidecar.cli.output import emit, reported_errors
from backup_sidecar.errors import RestoreRefusedError
from backup_sidecar.progress import progress_bar


@click.command()
@click.argument("archive")
@database_options
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Verify and say what would happen; change nothing.")
@json_option
@click.pass_obj
def restore(
    ctx: Context,
    archive: str,
    databases: DatabaseChoice,
    force: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Verify, take a pre-restore safety backup, then restore into the live databases."""
    from backup_sidecar.archiver import read_manifest, resolve_archive  # noqa: PLC0415

    with reported_errors(ctx, as_json=as_json):
        rt = ctx.runtime()
        names = databases.names()
        if not force and not dry_run:
            path = resolve_archive(rt.backup_dir, archive)
            targets = names or [n for n in read_manifest(path).members() if n in rt.databases]
            if not sys.stdin.isatty():
                raise RestoreRefusedError("no terminal to confirm on; pass --force to restore")
            live = ", ".join(f"{n} ({rt.databases[n].path})" for n in targets if n in rt.databases)
            if not click.confirm(f"Replace {live} with the content of {path.name}?", err=True):
                raise RestoreRefusedError("not confirmed")
        with progress_bar(enabled=not as_json) as progress:
            effort = replace(rt.effort, progress=progress)
            result = jobs.run_restore(rt, archive, names=names, dry_run=dry_run, effort=effort)
        payload = jobs.restore_json(result)

        def text() -> None:
            if result.dry_run:
                click.echo(f"dry run: {result.archive} verified; a restore would:")
                for step in result.plan:
                    click.echo(f"  - {step}")
                return
            if result.pre_restore_archive:
                click.echo(f"safety backup: {result.pre_restore_archive}")
            for damaged in result.damaged:
                click.echo(
                    f"warning: the live database {damaged}: saved as it was, in "
                    f"{result.pre_restore_archive} (listed damaged)",
                    err=True,
                )
            click.echo(f"restored {', '.join(result.restored)} from {result.archive}")

        emit(as_json, payload, text)


COMMANDS = (restore,)
