"""The application's data: `init` (the startup checks) and `import-arrows`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
import structlog

from backup_sidecar.cli.context import Context
from backup_sidecar.cli.output import reported_errors

log = structlog.get_logger(__name__)


@click.command()
@click.option(
    "--import",
    "import_files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Arrow JSON to import (never in production without FORCE_DATABASE_IMPORT=true).",
)
@click.option(
    "--restore-from-offsite",
    "from_offsite",
    is_flag=True,
    help="First restore, from the offsite store's newest confirmed copies, every database that "
    "is missing, zero-length or has no table; databases with content are left alone.",
)
@click.pass_obj
def init(ctx: Context, import_files: tuple[Path, ...], from_offsite: bool = False) -> None:
    """Startup checks: directories, integrity of existing databases, empty ones where missing.

    With --restore-from-offsite, databases without content are first restored from offsite
    (exit 1 if the store cannot be read, holds copies of a configured policy for a missing
    database but none usable, or a restore fails; 2 without an offsite section)."""
    from backup_sidecar.appdata.startup import run_init  # noqa: PLC0415

    with reported_errors(ctx):
        rt = ctx.runtime()
        if from_offsite:
            from backup_sidecar.jobs.offsite_seed import restore_missing  # noqa: PLC0415

            restore_missing(rt, environ=os.environ)
        report = run_init(
            list(rt.databases.values()),
            backup_dir=rt.backup_dir,
            environ=os.environ,
            import_files=import_files,
        )
        for note in report.notes:
            log.warning(note.event, reason=note.message)
        for db in report.databases:
            fields: dict[str, object] = {
                "database": db.name,
                "path": str(db.path),
                "status": db.status.value,
            }
            if db.imported is not None:
                fields["arrows_inserted"] = db.imported.arrows.inserted
            if db.status.failed:
                log.error("database_check_failed", detail=db.detail, **fields)
            else:
                log.info("database_ready", **fields)
        if not report.ok:
            sys.exit(1)


@click.command("import-arrows")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.pass_obj
def import_arrows_cmd(ctx: Context, files: tuple[Path, ...]) -> None:
    """Upsert scraper JSON into the arrow database (idempotent)."""
    from backup_sidecar.appdata.arrows_import import import_sources, load_sources  # noqa: PLC0415
    from backup_sidecar.appdata.import_rules import import_note  # noqa: PLC0415

    with reported_errors(ctx):
        note = import_note(os.environ, len(files))
        if note is not None:
            log.warning(note.event, reason=note.message)
            if note.event == "import_skipped":
                return
        sources = load_sources(files)  # every file valid before the database is opened
        rt = ctx.runtime()
        report = import_sources(rt.select(["arrow"])[0].path, sources)
        a, s = report.arrows, report.spines
        click.echo(
            f"arrows: {a.inserted} inserted, {a.updated} updated, {a.unchanged} unchanged; "
            f"spines: {s.inserted} inserted, {s.updated} updated, {s.unchanged} unchanged"
        )


COMMANDS = (init, import_arrows_cmd)
