"""Commands on the backup directory's archives: `backup`, `list`, `verify`, `scrub`, `prune`,
`cleanup`."""

from __future__ import annotations

import sys
from dataclasses import replace
from datetime import UTC, datetime

import click

from backup_sidecar import jobs
from backup_sidecar.cli.context import Context
from backup_sidecar.cli.offsite import list_offsite
from backup_sidecar.cli.offsite_ops import prune_offsite_cmd, verify_offsite_cmd
from backup_sidecar.cli.options import DatabaseChoice, database_options, json_option
from backup_sidecar.cli.output import emit, fail, reported_errors
from backup_sidecar.cli.tables import archive_table
from backup_sidecar.errors import UsageError
from backup_sidecar.progress import progress_bar


@click.command()
@click.option("--name", help="Archive name (default: <policy>_<UTC time>).")
@database_options
@click.option(
    "--policy",
    default=jobs.MANUAL_POLICY,
    show_default=True,
    help="manual or a configured policy (not pre_restore, which only restores write).",
)
@click.option("--cleanup", is_flag=True, help="Prune the policy afterwards.")
@click.option("--keep", type=int, help="With --cleanup: archives to keep (default: the policy's).")
@json_option
@click.pass_obj
def backup(
    ctx: Context,
    name: str | None,
    databases: DatabaseChoice,
    policy: str,
    cleanup: bool,
    keep: int | None,
    as_json: bool,
) -> None:
    """Take one consistent backup now and print the archive path."""
    with reported_errors(ctx, as_json=as_json):
        if keep is not None and not cleanup:
            raise UsageError("--keep needs --cleanup (or use `prune --keep`)")
        rt = ctx.runtime()
        rt.check_backup_policy(policy)
        names = databases.names()
        with progress_bar(enabled=not as_json) as progress:
            effort = replace(rt.effort, progress=progress)
            info = jobs.run_backup(rt, policy=policy, names=names, archive_name=name, effort=effort)
        pruned = jobs.run_prune(rt, policies=[policy], keep=keep) if cleanup else None
        payload = jobs.archive_json(info) | {
            "pruned": [a.name for a in pruned.deleted] if pruned else [],
        }
        emit(as_json, payload, lambda: click.echo(str(info.path)))
        if pruned and not as_json:
            for a in pruned.deleted:
                click.echo(f"deleted {a.path}", err=True)


@click.command("list")
@click.option("--offsite", is_flag=True, help="What the offsite store holds instead.")
@json_option
@click.pass_obj
def list_cmd(ctx: Context, offsite: bool, as_json: bool) -> None:
    """Archives, newest first, from their metadata alone (--offsite: the offsite store's)."""
    from backup_sidecar.archiver import list_archives  # noqa: PLC0415

    if offsite:
        list_offsite(ctx, as_json=as_json)
        return
    with reported_errors(ctx, as_json=as_json):
        rt = ctx.runtime()
        archives = jobs.with_incremental(rt, list_archives(rt.backup_dir))

        rows = [jobs.archive_json(a) for a in archives]

        def table() -> None:
            for line in archive_table(rows, now=datetime.now(UTC)):
                click.echo(line)

        emit(as_json, rows, table)


@click.command()
@click.argument("archive", required=False)
@click.option("--offsite", is_flag=True, help="Offsite copies (default: each policy's newest).")
@click.option("--latest", is_flag=True, help="With --offsite: the newest copy only.")
@json_option
@click.pass_obj
def verify(ctx: Context, archive: str | None, offsite: bool, latest: bool, as_json: bool) -> None:
    """Verify an archive completely: gzip stream, members, checksums, integrity_check."""
    if offsite:
        verify_offsite_cmd(ctx, ref=archive, latest=latest, as_json=as_json)
        return
    if archive is None or latest:
        raise click.UsageError("give an ARCHIVE (--latest is for --offsite)")
    with reported_errors(ctx, as_json=as_json):
        with progress_bar(enabled=not as_json) as progress:
            rt = ctx.runtime()
            report = jobs.run_verify(rt, archive, effort=replace(rt.effort, progress=progress))

        def text() -> None:
            for warning in report["warnings"]:
                click.echo(f"warning: {warning}", err=True)
            click.echo(f"{report['archive']}: ok ({', '.join(report['databases'])})")

        emit(as_json, report, text)


@click.command()
@json_option
@click.pass_obj
def scrub(ctx: Context, as_json: bool) -> None:
    """Read every archive to its end (gzip CRCs, SHA-256s) and mark the ones that fail damaged.

    Exit 1 if it found a damaged archive."""
    with reported_errors(ctx, as_json=as_json):
        with progress_bar(enabled=not as_json) as progress:
            rt = ctx.runtime()
            report = jobs.run_scrub(rt, effort=replace(rt.effort, progress=progress))

        def text() -> None:
            for name, reason in report.damaged:
                click.echo(f"{name}: damaged: {reason}")
            click.echo(
                f"scrub: {len(report.passed)} ok, {len(report.damaged)} damaged, "
                f"{len(report.skipped)} skipped (already damaged or gone)"
            )

        emit(as_json, report.as_json(), text)
        if report.damaged:
            sys.exit(1)


def _prune(
    ctx: Context, policies: tuple[str, ...], keep: int | None, dry_run: bool, as_json: bool
) -> None:
    with reported_errors(ctx, as_json=as_json):
        result = jobs.run_prune(
            ctx.runtime(), policies=list(policies) or None, keep=keep, dry_run=dry_run
        )
        verb = "would delete" if dry_run else "deleted"
        payload = jobs.prune_json(result, dry_run=dry_run)

        def text() -> None:
            for a, e in result.damaged:
                click.echo(f"damaged {a.path}: {e} (kept, not counted)", err=True)
            for a, why in result.kept if dry_run else ():
                click.echo(f"would keep {a.path}: {', '.join(why)}")
            for a in result.deleted:
                click.echo(f"{verb} {a.path}")
            for a in result.skipped_busy:
                click.echo(f"kept {a.path}: in use by a verify or restore", err=True)
            if not result.deleted:
                click.echo("nothing to delete")

        emit(as_json, payload, text)
        if result.failed:
            a, e = result.failed[0]
            fail(f"could not delete archive {a.name!r}: {e}", 1)
        if result.gc_failed:
            db, e = result.gc_failed[0]
            fail(f"page store {db!r}: garbage collection failed (the next prune retries): {e}", 1)


@click.command()
@click.option("--policy", "policies", multiple=True, help="Only this policy (repeatable).")
@click.option("--keep", type=int, help="Archives to keep per policy (default: the policy's keep).")
@click.option("--dry-run", is_flag=True, help="Print what would be deleted; delete nothing.")
@click.option("--offsite", is_flag=True, help="The offsite store's copies (offsite.keep).")
@json_option
@click.pass_obj
def prune(
    ctx: Context,
    policies: tuple[str, ...],
    keep: int | None,
    dry_run: bool,
    offsite: bool,
    as_json: bool,
) -> None:
    """Apply retention; the newest verified archive of a policy is never deleted."""
    if offsite:
        if policies or keep is not None:
            raise click.UsageError("--policy and --keep are not for --offsite (offsite.keep)")
        prune_offsite_cmd(ctx, dry_run=dry_run, as_json=as_json)
        return
    _prune(ctx, policies, keep, dry_run, as_json)


@click.command()
@click.option("--policy", "policies", multiple=True, help="Only this policy (repeatable).")
@click.option("--keep", type=int, required=True, help="Archives to keep per policy.")
@click.option("--dry-run", is_flag=True, help="Print what would be deleted; delete nothing.")
@json_option
@click.pass_obj
def cleanup(
    ctx: Context, policies: tuple[str, ...], keep: int, dry_run: bool, as_json: bool
) -> None:
    """The seed's name for `prune --keep K`."""
    _prune(ctx, policies, keep, dry_run, as_json)


COMMANDS = (backup, list_cmd, verify, scrub, prune, cleanup)
