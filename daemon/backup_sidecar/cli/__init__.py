"""The command line: the click group `main` (the `backup-sidecar` script) and its commands.

The command modules define commands; this module registers them on the group. Only the CLI
prints or exits (see cli/output.py for the exit codes).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

import click

from backup_sidecar import __version__
from backup_sidecar.cli import (
    archives,
    configuration,
    ctl,
    daemon,
    data,
    demo,
    export,
    restore,
)
from backup_sidecar.cli.context import Context

if TYPE_CHECKING:
    from backup_sidecar.logconfig import LogFormat

#: Commands whose output is their log; the others print their result and one error line.
_LOGGING_COMMANDS = frozenset({"run", "start", "demo", "init", "import-arrows"})
_LOG_FORMATS: Final[tuple[LogFormat, ...]] = ("json", "console")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    type=click.Path(path_type=Path),
    envvar="SIDECAR_CONFIG",
    help="YAML configuration (default: $SIDECAR_CONFIG, else built-in defaults + environment).",
)
@click.option(
    "--log-format",
    type=click.Choice(_LOG_FORMATS),
    default=None,
    envvar="SIDECAR_LOG_FORMAT",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logs and tracebacks.")
@click.version_option(__version__, prog_name="backup-sidecar")
@click.pass_context
def main(
    click_ctx: click.Context, config: Path | None, log_format: str | None, verbose: bool
) -> None:
    """Consistent online backups, verified archives and safe live restores of SQLite databases."""
    from backup_sidecar.logconfig import configure_logging  # noqa: PLC0415

    fmt = next((f for f in _LOG_FORMATS if f == log_format), None)
    chatty = click_ctx.invoked_subcommand in _LOGGING_COMMANDS
    configure_logging(fmt=fmt, verbose=verbose, quiet=not chatty)
    click_ctx.obj = Context(config=config, log_format=fmt, verbose=verbose)


for _module in (archives, restore, export, daemon, ctl, configuration, data, demo):
    for _command in _module.COMMANDS:
        main.add_command(_command)

__all__ = ["Context", "main"]
