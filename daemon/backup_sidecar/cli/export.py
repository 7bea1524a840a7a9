"""`export NAME [--out FILE]`: an incremental backup as a standalone, seed-compatible archive."""

from __future__ import annotations

from pathlib import Path

import click

from backup_sidecar.cli.context import Context
from backup_sidecar.cli.options import json_option
from backup_sidecar.cli.output import emit, reported_errors


@click.command()
@click.argument("name")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The new archive file (default ./NAME.tar.gz); never replaced if it exists.",
)
@json_option
@click.pass_obj
def export(ctx: Context, name: str, out: Path | None, as_json: bool) -> None:
    """Write incremental backup NAME as a standalone .tar.gz (backup_metadata.json and the
    databases under their seed names): `verify`, `restore` and plain `tar -xzf` read it."""
    from backup_sidecar.jobs.pageexport import export_backup  # noqa: PLC0415

    with reported_errors(ctx, as_json=as_json):
        path = export_backup(ctx.runtime(), name, out=out, cwd=Path.cwd())
        emit(as_json, {"archive": name, "path": str(path)}, lambda: click.echo(str(path)))


COMMANDS = (export,)
