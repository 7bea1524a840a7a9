"""`restore --latest --from-offsite`: each database from the newest confirmed offsite copy that
holds it (jobs/offsite_pick.py), every copy fetched and verified before any is restored."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

import click

from backup_sidecar.errors import RestoreRefusedError
from backup_sidecar.progress import progress_bar

if TYPE_CHECKING:
    from backup_sidecar.archiver import RestoreResult
    from backup_sidecar.jobs import Runtime
    from backup_sidecar.jobs.offsite import Fetched, Skipped
    from backup_sidecar.jobs.offsite_pick import Picked


def restore_latest(
    rt: Runtime, names: list[str] | None, *, force: bool, dry_run: bool, as_json: bool
) -> tuple[dict[str, object], Picked, tuple[RestoreResult, ...]]:
    """Choose, fetch, confirm and restore; the --json payload, the choice and the results."""
    from backup_sidecar.jobs import offsite_pick  # noqa: PLC0415 (keep --help fast)

    rt.require_offsite()
    wanted = [s.name for s in rt.select(names)]
    # A lost host's fresh disk has neither the backup directory nor the databases'.
    for name in wanted:
        rt.databases[name].path.parent.mkdir(parents=True, exist_ok=True)
    rt.backup_dir.mkdir(parents=True, exist_ok=True)
    picked = offsite_pick.pick_copies(
        rt,
        wanted,
        environ=os.environ,
        on_skip=None if as_json else _say_skipped,
        on_fetched=None if as_json else _say_fetched,
    )
    offsite_pick.require_found(picked, asked=names is not None)
    if picked.not_found and not as_json:
        click.echo(
            f"warning: no usable confirmed offsite copy holds {', '.join(picked.not_found)}: "
            "not restored",
            err=True,
        )
    if not force and not dry_run:
        if not sys.stdin.isatty():
            raise RestoreRefusedError("no terminal to confirm on; pass --force to restore")
        which = "; ".join(
            f"{db} ({rt.databases[db].path}) with {archive}"
            for db, archive in picked.databases().items()
        )
        if not click.confirm(f"Replace {which}?", err=True):
            raise RestoreRefusedError("not confirmed")
    with progress_bar(enabled=not as_json) as progress:
        effort = replace(rt.effort, progress=progress)
        results = offsite_pick.restore_groups(rt, picked, dry_run=dry_run, effort=effort)
    return offsite_pick.latest_json(picked, results), picked, results


def latest_text(picked: Picked, results: tuple[RestoreResult, ...]) -> None:
    """The text report: per archive, its dry-run plan, or its safety backup and what it gave."""
    if results and results[0].dry_run:
        click.echo("dry run: a restore would take")
        for db, archive in picked.databases().items():
            click.echo(f"  {db} from {archive}")
    for result in results:
        result_text(result)


def result_text(result: RestoreResult, *, dry_run_heading: str = "") -> None:
    """One restore's text: its dry-run plan, or its safety backup, the damaged live databases
    it saved as they were, and what it restored."""
    if result.copy_of:
        click.echo(
            f"warning: {result.archive} holds backup {result.copy_of} (its metadata names it: a "
            f"copy, link or rename of that archive): {result.copy_of}'s data is restored",
            err=True,
        )
    if result.dry_run:
        click.echo(f"{dry_run_heading}{result.archive} verified; a restore would:")
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


def _say_fetched(fetched: Fetched) -> None:
    if fetched.reused:
        click.echo(
            f"{fetched.archive} is already in the backup directory, the same archive as "
            f"{fetched.object}: using it",
            err=True,
        )
    else:
        click.echo(
            f"downloaded {fetched.object} as {fetched.archive}{mended_text(fetched)}", err=True
        )


def mended_text(fetched: Fetched) -> str:
    """The local packs found damaged and replaced by the fetch (the local side at fault)."""
    if not fetched.mended:
        return ""
    return (
        f"; the local pack(s) {', '.join(fetched.mended)} were damaged (marked, or not the"
        " bytes uploaded): downloaded and put in their place"
    )


def _say_skipped(skip: Skipped) -> None:
    click.echo(
        f"warning: offsite copy {skip.object} unusable ({skip.reason}); "
        "trying the next newest confirmed copy",
        err=True,
    )
