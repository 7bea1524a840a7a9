"""The command line: the click group `main` (the `backup-sidecar` script) and its commands.

The command modules define commands; this module registers them on the group. Only the CLI
prints or exits (see cli/output.py for the exit codes).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Final

import click

from backup_sidecar.cli.context import Context

if TYPE_CHECKING:
    from backup_sidecar.logconfig import LogFormat, LogLevel

#: Commands whose output is their log; the others print their result and one error line.
_LOGGING_COMMANDS = frozenset({"run", "start", "demo", "init", "import-arrows"})
_LOG_FORMATS: Final[tuple[LogFormat, ...]] = ("json", "console")
_LOG_LEVELS: Final[tuple[LogLevel, ...]] = ("debug", "info", "warning", "error", "critical")
#: The modules under cli/ whose COMMANDS the group holds, imported when first needed.
_MODULES: Final = (
    "archives",
    "restore",
    "export",
    "daemon",
    "ctl",
    "configuration",
    "data",
    "demo",
)
#: Commands that must start at once (the container's HEALTHCHECK, liveness probes): only their
#: module is imported, and they set up logging themselves if they need it (cli/endpoints.py).
_FAST: Final = {"healthcheck": "daemon", "ctl": "ctl"}


class _LazyGroup(click.Group):
    """A group that imports its command modules on first use: all of them to list or find a
    command, only its own for one of the `_FAST` commands (`--version` imports none)."""

    _loaded: set[str]

    def _load(self, modules: tuple[str, ...]) -> None:
        loaded = self.__dict__.setdefault("_loaded", set())
        for name in modules:
            if name not in loaded:
                module = importlib.import_module(f"backup_sidecar.cli.{name}")
                for command in module.COMMANDS:
                    self.add_command(command)
                loaded.add(name)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._load((_FAST[cmd_name],) if cmd_name in _FAST else _MODULES)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load(_MODULES)
        return super().list_commands(ctx)


def _print_version(click_ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not click_ctx.resilient_parsing:
        from backup_sidecar import __version__  # noqa: PLC0415

        click.echo(f"backup-sidecar, version {__version__}")
        click_ctx.exit()


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    help="Log lines as JSON or for a console (default: $SIDECAR_LOG_FORMAT, else console on a "
    "terminal, JSON otherwise).",
)
@click.option(
    "--log-level",
    type=click.Choice(_LOG_LEVELS, case_sensitive=False),
    default=None,
    envvar="SIDECAR_LOG_LEVEL",
    help="The daemon's (run, start, init, demo) log threshold (default: $SIDECAR_LOG_LEVEL, "
    "else info).",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logs and tracebacks.")
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
@click.pass_context
def main(
    click_ctx: click.Context,
    config: Path | None,
    log_format: str | None,
    log_level: str | None,
    verbose: bool,
) -> None:
    """Consistent online backups, verified archives and safe live restores of SQLite databases."""
    fmt = next((f for f in _LOG_FORMATS if f == log_format), None)
    level = next((v for v in _LOG_LEVELS if v == (log_level or "").lower()), None)
    chatty = click_ctx.invoked_subcommand in _LOGGING_COMMANDS
    click_ctx.obj = Context(
        config=config, log_format=fmt, verbose=verbose, quiet=not chatty, log_level=level
    )
    if click_ctx.invoked_subcommand not in _FAST:
        click_ctx.obj.configure_logging()


__all__ = ["Context", "main"]
