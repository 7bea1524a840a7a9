"""`restore`: replace the live databases with an archive's content, after confirmation."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

import click

from backup_sidecar import jobs
from backup_sidecar.cli.context import Context
from backup_sidecar.cli.options import DatabaseChoice, database_options, json_option
from backup_sidecar.cli.output import emit, fail, reported_errors
from backup_sidecar.cli.restore_latest import mended_text, result_text
from backup_sidecar.errors import OffsiteNotRestoredError, RestoreRefusedError, UsageError
from backup_sidecar.progress import progress_bar

if TYPE_CHECKING:
    from backup_sidecar.jobs.offsite import Fetched


@click.command()
@click.argument("archive", required=False)
@database_options
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Verify and say what would happen; change nothing.")
@click.option(
    "--from-offsite",
    is_flag=True,
    help="Download the archive from the offsite store first (checked, decrypted).",
)
@click.option(
    "--latest",
    is_flag=True,
    help="With --from-offsite: each database from the newest confirmed copy holding it.",
)
@json_option
@click.pass_obj
def restore(
    ctx: Context,
    archive: str | None,
    databases: DatabaseChoice,
    force: bool,
    dry_run: bool,
    from_offsite: bool,
    latest: bool,
    as_json: bool,
) -> None:
    """Verify, take a pre-restore safety backup, then restore into the live databases.

    With --from-offsite, ARCHIVE (or --latest) is first downloaded from the offsite store,
    its checksum checked, decrypted with offsite.encryption.identity_file if encrypted, and
    verified before it enters the backup directory. --latest restores each database (each
    --db) from the newest confirmed copy that holds it (pre_restore copies never; a copy that
    fails is passed over for the next newest), every copy fetched before any is restored; it
    exits 3 after restoring the others when no usable copy holds a configured database."""
    from backup_sidecar.jobs.restore import restore_source  # noqa: PLC0415

    with reported_errors(ctx, as_json=as_json):
        archive = which_archive(archive, latest=latest, from_offsite=from_offsite)
        rt = ctx.runtime()
        names = databases.names()
        if latest:  # each database from the newest confirmed copy that holds it
            from backup_sidecar.cli.restore_latest import latest_text, restore_latest  # noqa: PLC0415

            payload, picked, results = restore_latest(
                rt, names, force=force, dry_run=dry_run, as_json=as_json
            )
            emit(as_json, payload, lambda: latest_text(picked, results))
            if picked.not_found:  # a disaster recovery that left a database behind: exit 3
                fail(str(OffsiteNotRestoredError(picked.url, picked.not_found)), 3)
            return
        fetched = None
        if from_offsite:
            from backup_sidecar.jobs.offsite import fetch_archive  # noqa: PLC0415

            rt.require_offsite()
            if names:
                rt.select(names)
            # A lost host's fresh disk has neither the backup directory nor the databases'.
            for spec in [rt.databases[n] for n in names] if names else rt.databases.values():
                spec.path.parent.mkdir(parents=True, exist_ok=True)
            rt.backup_dir.mkdir(parents=True, exist_ok=True)
            fetched = fetch_archive(rt, archive, environ=os.environ)
            if not as_json:
                click.echo(_fetched_line(fetched), err=True)
            archive = fetched.archive
        assert archive is not None
        if not force and not dry_run:
            _, shown, members, _ = restore_source(rt, archive)
            targets = names or [n for n in members if n in rt.databases]
            if not sys.stdin.isatty():
                raise RestoreRefusedError("no terminal to confirm on; pass --force to restore")
            live = ", ".join(f"{n} ({rt.databases[n].path})" for n in targets if n in rt.databases)
            if not click.confirm(f"Replace {live} with the content of {shown}?", err=True):
                raise RestoreRefusedError("not confirmed")
        with progress_bar(enabled=not as_json) as progress:
            effort = replace(rt.effort, progress=progress)
            result = jobs.run_restore(rt, archive, names=names, dry_run=dry_run, effort=effort)
        payload = jobs.restore_json(result)
        if fetched is not None:
            payload["offsite"] = {
                "object": fetched.object,
                "reused": fetched.reused,
                "skipped": [{"object": s.object, "reason": s.reason} for s in fetched.skipped],
            }

        emit(as_json, payload, lambda: result_text(result, dry_run_heading="dry run: "))


def _fetched_line(fetched: Fetched) -> str:
    if fetched.reused:
        return (
            f"{fetched.archive} is already in the backup directory, the same archive as "
            f"{fetched.object}: using it"
        )
    return f"downloaded {fetched.object} as {fetched.archive}{mended_text(fetched)}"


def which_archive(archive: str | None, *, latest: bool, from_offsite: bool) -> str | None:
    """The archive asked for (None: the newest offsite), or a UsageError for a contradiction."""
    if latest and not from_offsite:
        raise UsageError("--latest needs --from-offsite")
    if latest and archive is not None:
        raise UsageError("give an archive name or --latest, not both")
    if archive is None and not latest:
        raise UsageError("give an archive name (or --latest --from-offsite)")
    return archive


COMMANDS = (restore,)
