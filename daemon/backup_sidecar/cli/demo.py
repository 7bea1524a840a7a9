"""`demo`: demo ArrowTuner databases, a first backup and verify, then the daemon on them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from backup_sidecar import jobs
from backup_sidecar.cli.context import Context
from backup_sidecar.cli.daemon import run
from backup_sidecar.cli.output import reported_errors

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


@click.command()
@click.option(
    "--root",
    type=click.Path(path_type=Path),
    default=Path("var"),
    show_default=True,
    help="Directory the demo's databases, backups and configuration go to.",
)
@click.option("--no-daemon", is_flag=True, help="Stop after the first backup, list and verify.")
@click.option("--port", type=int, default=9464, show_default=True, help="Metrics port.")
@click.pass_obj
def demo(ctx: Context, root: Path, no_daemon: bool, port: int) -> None:
    """Build demo ArrowTuner databases under ROOT, back them up, verify, then run the daemon."""
    from backup_sidecar.appdata.demo import build_demo  # noqa: PLC0415
    from backup_sidecar.archiver import list_archives  # noqa: PLC0415

    with reported_errors(ctx):
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
        rt = jobs.Runtime.load(config, environ=env, cwd=Path.cwd())
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
    click.get_current_context().invoke(run)


COMMANDS = (demo,)
