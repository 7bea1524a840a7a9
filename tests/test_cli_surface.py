"""The CLI's surface: every option explains itself in --help, and the log level comes from
the environment."""

from __future__ import annotations

import re

import click
from click.testing import CliRunner

from backup_sidecar.cli import _MODULES, main
from backup_sidecar.cli.context import Context
from backup_sidecar.logconfig import reset_logging
from support.cli import clean_env
from support.paths import ROOT


def _options_without_help(command: click.Command, ctx: click.Context, path: str) -> list[str]:
    missing = [
        f"{path} {param.opts[0]}"
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden and not param.help
    ]
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None, name
            missing += _options_without_help(sub, ctx, f"{path} {name}")
    return missing


def test_every_option_has_help_text() -> None:
    """Walking the whole click tree (every command and group), no option lacks help text."""
    assert _options_without_help(main, click.Context(main), "backup-sidecar") == []


def test_the_log_level_comes_from_the_environment() -> None:
    """`$SIDECAR_LOG_LEVEL` (any case) reaches the command's context; an unknown level is a
    usage error naming the option."""
    seen: list[Context] = []

    @main.command("probe-level", hidden=True)
    @click.pass_obj
    def probe(ctx: Context) -> None:
        seen.append(ctx)

    try:
        runner = CliRunner()
        done = runner.invoke(main, ["probe-level"], env=clean_env(SIDECAR_LOG_LEVEL="WARNING"))
        assert done.exit_code == 0, done.output
        assert seen[0].log_level == "warning"
        bad = runner.invoke(main, ["probe-level"], env=clean_env(SIDECAR_LOG_LEVEL="loud"))
        assert bad.exit_code == 2 and "--log-level" in bad.output
    finally:
        main.commands.pop("probe-level", None)
        reset_logging()


def test_the_lazy_group_knows_every_command_module() -> None:
    """Every module under cli/ that defines COMMANDS is one the lazy group loads (a new one
    left out of its list would vanish from the CLI without an error)."""
    cli_dir = ROOT / "daemon" / "backup_sidecar" / "cli"
    defining = {
        p.stem for p in cli_dir.glob("*.py") if re.search(r"^COMMANDS\b", p.read_text(), re.M)
    }
    assert defining == set(_MODULES)
