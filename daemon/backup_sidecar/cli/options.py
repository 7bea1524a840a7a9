"""Options more than one command takes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from backup_sidecar.errors import UsageError

json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@dataclass(frozen=True)
class DatabaseChoice:
    """`--db NAME` (repeatable), `--arrow-db-only`, `--user-db-only`, as one value."""

    dbs: tuple[str, ...]
    arrow_only: bool
    user_only: bool

    def names(self) -> list[str] | None:
        """The chosen database names (None: every database); UsageError for a contradiction."""
        if self.arrow_only and self.user_only:
            raise UsageError("--arrow-db-only and --user-db-only exclude each other")
        chosen = list(self.dbs)
        if self.arrow_only:
            chosen.append("arrow")
        if self.user_only:
            chosen.append("user")
        return chosen or None


def database_options(command: Callable[..., None]) -> Callable[..., None]:
    """Add `--db`, `--arrow-db-only` and `--user-db-only`, passed as `databases: DatabaseChoice`."""

    @functools.wraps(command)
    def with_choice(
        *args: Any, dbs: tuple[str, ...], arrow_db_only: bool, user_db_only: bool, **kw: Any
    ) -> None:
        command(*args, databases=DatabaseChoice(dbs, arrow_db_only, user_db_only), **kw)

    decorated: Callable[..., None] = with_choice
    for option in (
        click.option("--user-db-only", is_flag=True, help="Only the user database."),
        click.option("--arrow-db-only", is_flag=True, help="Only the arrow database."),
        click.option(
            "--db", "dbs", multiple=True, metavar="NAME", help="Database by name (repeatable)."
        ),
    ):
        decorated = option(decorated)
    return decorated
