"""CLI commands for the application's data: `init`, `import-arrows`, `demo`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
import structlog

from backup_sidecar import jobs
from backup_sidecar.cli import Context, _errors, main

log = structlog.get_logger("backup_sidecar.init")


@main.command()
@click.option(
    "--import",
    "import_files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Arrow JSON to import (never in production without FORCE_DATABASE_IMPORT=true).",
)
@click.pass_obj
def init(ctx: Context, import_files: tuple[Path, ...]) -> None:
    """Startup checks: directories, integrity of existing databases, empty ones where missing."""
    from backup_sidecar.appdata.startup import run_init  # noqa: PLC0415

    with _errors(ctx):
        rt = ctx.runtime()
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


@main.command("import-arrows")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.pass_obj
def import_arrows_cmd(ctx: Context, files: tuple[Path, ...]) -> None:
    """Upsert scraper JSON into the arrow database (idempotent)."""
    from backup_sidecar.appdata.arrows_import import import_sources, load_sources  # noqa: PLC0415
    from backup_sidecar.appdata.import_rules import import_note  # noqa: PLC0415

    with _errors(ctx):
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


DEMO_CONFIG = """\
# Written by `backup-sidecar demo`: policies that fire within a minute.
backup_dir: {backups}
databases:
  arrow: {{path: {arrow}}}
  user: {{path: {user}}}
policies:
  frequent: {{every: 20s, keep: 5}}
  daily: {{schedule: "0 3 * * *", keep: 7}}
  drill: {{every: 45s, keep: 0}}
  pre_restore: {{keep: 10}}
health: {{interval: 10s, max_backup_age: {{frequent: 2m}}}}
metrics: {{host: 127.0.0.1, port: {port}}}
control: {{socket: {socket}, mode: "0600"}}
"""


@main.command()
@click.option("--root", type=click.Path(path_type=Path), default=Path("var"), show_default=True)
@click.option("--no-daemon", is_flag=True, help="Stop after the first backup, list and verify.")
@click.option("--port", type=int, default=9464, show_default=True, help="Metrics port.")
@click.pass_obj
def demo(ctx: Context, root: Path, no_daemon: bool, port: int) -> None:
    """Build demo ArrowTuner databases under ROOT, back them up, verify, then run the daemon."""
    from backup_sidecar.appdata.demo import build_demo  # noqa: PLC0415
    from backup_sidecar.archiver import list_archives  # noqa: PLC0415
    from backup_sidecar.runtime import load_runtime  # noqa: PLC0415

    with _errors(ctx):
        root = root.absolute()
        layout = build_demo(root)
        for note in layout.notes:
            click.echo(f"note: {note}")
        config = root / "sidecar.yaml"
        config.write_text(
            DEMO_CONFIG.format(
                backups=layout.backup_dir,
                arrow=layout.arrow_db,
                user=layout.user_db,
                port=port,
                socket=root / "run" / "control.sock",
            )
        )
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("BACKUP_DIR", "ARROW_DATABASE_PATH", "USER_DATABASE_PATH")
        }
        rt = load_runtime(config, environ=env, cwd=Path.cwd())
        info = jobs.run_backup(rt, policy="manual")
        report = jobs.run_verify(rt, info.name)
        click.echo(f"arrow database : {layout.arrow_db} ({layout.arrow_source})")
        click.echo(f"user database  : {layout.user_db}")
        click.echo(f"archive        : {info.path} ({info.size_bytes} bytes, verify: ok)")
        click.echo(f"archives       : {len(list_archives(rt.backup_dir))} in {rt.backup_dir}")
        click.echo(f"config         : {config}")
        if report["warnings"]:
            click.echo(f"warnings       : {report['warnings']}")
        if no_daemon:
            return
        click.echo(f"metrics        : http://127.0.0.1:{port}/metrics  and  /healthz")
        click.echo(f"control socket : {root / 'run' / 'control.sock'}")
        click.echo(f"  try          : uv run backup-sidecar --config {config} ctl status")
        click.echo("starting the daemon (Ctrl-C to stop)")
        sys.stdout.flush()
    os.environ.pop("BACKUP_DIR", None)
    os.environ.pop("ARROW_DATABASE_PATH", None)
    os.environ.pop("USER_DATABASE_PATH", None)
    ctx.config = config
    click.get_current_context().invoke(main.commands["run"])
