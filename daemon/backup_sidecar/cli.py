"""The command line: the only module that prints or exits.

Exit codes: 0 success; 1 the operation failed; 2 bad usage or invalid configuration.
Errors are one line on stderr naming the file, key or archive at fault (traceback with -v).
"""

from __future__ import annotations

import json
import os
import select
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any, NoReturn

import click

from backup_sidecar import __version__, jobs
from backup_sidecar.errors import RestoreRefusedError, SidecarError, UsageError
from backup_sidecar.progress import progress_bar


@dataclass
class Context:
    config: Path | None
    log_format: str | None
    verbose: bool
    _runtime: jobs.Runtime | None = None

    def runtime(self) -> jobs.Runtime:
        if self._runtime is None:
            from backup_sidecar.runtime import load_runtime  # noqa: PLC0415 (keep --help fast)

            self._runtime = load_runtime(self.config, environ=os.environ, cwd=Path.cwd())
        return self._runtime


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"backup-sidecar: error: {message}", err=True)
    sys.exit(code)


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (`list | head -1`), as opposed to a
    broken pipe or socket elsewhere, which is a real failure to report."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _quiet_exit_on_closed_stdout() -> NoReturn:
    """What Python's documentation says to do on EPIPE (and what Click does): point stdout at
    /dev/null so the interpreter's final flush cannot fail again, and exit 1 without a word."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(1)


def error_json(exc: SidecarError | OSError) -> dict[str, Any]:
    """A failed command for --json: the control socket's error object, with the same codes."""
    from backup_sidecar.control.protocol import error_body  # noqa: PLC0415 (keep --help fast)

    if isinstance(exc, SidecarError):
        return {"ok": False, "error": error_body(exc).model_dump()}
    where = f" ({exc.filename})" if exc.filename else ""
    return {"ok": False, "error": {"code": "failed", "message": f"{exc.strerror or exc}{where}"}}


@contextmanager
def _errors(ctx: Context, *, as_json: bool = False) -> Iterator[None]:
    """Map the library's exceptions to one stderr line and an exit code, once for every command;
    with --json, the error object is printed on stdout too. A closed stdout (the reader of a
    pipe went away) ends the command quietly."""
    try:
        yield
        if sys.stdout is not None:  # None: started with stdout closed (`>&-`)
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's final flush
    except (SidecarError, OSError) as exc:
        if isinstance(exc, BrokenPipeError) and _stdout_reader_gone():
            _quiet_exit_on_closed_stdout()
        if ctx.verbose:
            raise
        if as_json:
            with suppress(BrokenPipeError):
                click.echo(json.dumps(error_json(exc), indent=2))
        if isinstance(exc, UsageError):
            _fail(str(exc), 2)
        if isinstance(exc, SidecarError):
            _fail(str(exc), 1)
        where = f" ({exc.filename})" if exc.filename else ""
        _fail(f"{exc.strerror or exc}{where}", 1)


def _emit(as_json: bool, payload: Any, text: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(payload, indent=2, default=str))
    else:
        text()


def _db_options(dbs: Sequence[str], arrow_only: bool, user_only: bool) -> list[str] | None:
    if arrow_only and user_only:
        raise UsageError("--arrow-db-only and --user-db-only exclude each other")
    chosen = list(dbs)
    if arrow_only:
        chosen.append("arrow")
    if user_only:
        chosen.append("user")
    return chosen or None


db_option = click.option(
    "--db", "dbs", multiple=True, metavar="NAME", help="Database by name (repeatable)."
)
arrow_option = click.option("--arrow-db-only", is_flag=True, help="Only the arrow database.")
user_option = click.option("--user-db-only", is_flag=True, help="Only the user database.")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


#: Commands whose output is their log; the others print their result and one error line.
_LOGGING_COMMANDS = frozenset({"run", "start", "demo", "init", "import-arrows"})


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    type=click.Path(path_type=Path),
    envvar="SIDECAR_CONFIG",
    help="YAML configuration (default: $SIDECAR_CONFIG, else built-in defaults + environment).",
)
@click.option(
    "--log-format",
    type=click.Choice(["json", "console"]),
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

    chatty = click_ctx.invoked_subcommand in _LOGGING_COMMANDS
    configure_logging(fmt=log_format, verbose=verbose, quiet=not chatty)  # type: ignore[arg-type]
    click_ctx.obj = Context(config=config, log_format=log_format, verbose=verbose)


@main.command()
@click.option("--name", help="Archive name (default: <policy>_<UTC time>).")
@db_option
@arrow_option
@user_option
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
    dbs: tuple[str, ...],
    arrow_db_only: bool,
    user_db_only: bool,
    policy: str,
    cleanup: bool,
    keep: int | None,
    as_json: bool,
) -> None:
    """Take one consistent backup now and print the archive path."""
    with _errors(ctx, as_json=as_json):
        if keep is not None and not cleanup:
            raise UsageError("--keep needs --cleanup (or use `prune --keep`)")
        rt = ctx.runtime()
        rt.check_backup_policy(policy)
        names = _db_options(dbs, arrow_db_only, user_db_only)
        with progress_bar(enabled=not as_json) as progress:
            info = jobs.run_backup(
                rt, policy=policy, names=names, archive_name=name, progress=progress
            )
        pruned = jobs.run_prune(rt, policies=[policy], keep=keep) if cleanup else None
        payload = jobs.archive_json(info) | {
            "pruned": [a.name for a in pruned.deleted] if pruned else [],
        }
        _emit(as_json, payload, lambda: click.echo(str(info.path)))
        if pruned and not as_json:
            for a in pruned.deleted:
                click.echo(f"deleted {a.path}", err=True)


_ROW = "{:<40} {:<20} {:>12} {:<12} {:<9} {}"


@main.command("list")
@json_option
@click.pass_obj
def list_cmd(ctx: Context, as_json: bool) -> None:
    """Archives, newest first, from their metadata alone."""
    from backup_sidecar.archiver import list_archives  # noqa: PLC0415

    with _errors(ctx, as_json=as_json):
        archives = list_archives(ctx.runtime().backup_dir)

        def table() -> None:
            if not archives:
                click.echo("no archives")
                return
            click.echo(
                _ROW.format("NAME", "CREATED (UTC)", "SIZE", "POLICY", "STATUS", "DATABASES")
            )
            for a in archives:
                created = a.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
                extra = a.error or ",".join(a.databases)
                row = (a.name, created, a.size_bytes, a.policy, a.status, extra)
                click.echo(_ROW.format(*row))

        _emit(as_json, [jobs.archive_json(a) for a in archives], table)


@main.command()
@click.argument("archive")
@json_option
@click.pass_obj
def verify(ctx: Context, archive: str, as_json: bool) -> None:
    """Verify an archive completely: gzip stream, members, checksums, integrity_check."""
    with _errors(ctx, as_json=as_json):
        with progress_bar(enabled=not as_json) as progress:
            report = jobs.run_verify(ctx.runtime(), archive, progress=progress)

        def text() -> None:
            for warning in report["warnings"]:
                click.echo(f"warning: {warning}", err=True)
            click.echo(f"{report['archive']}: ok ({', '.join(report['databases'])})")

        _emit(as_json, report, text)


@main.command()
@json_option
@click.pass_obj
def scrub(ctx: Context, as_json: bool) -> None:
    """Read every archive to its end (gzip CRCs, SHA-256s) and mark the ones that fail damaged.

    Exit 1 if it found a damaged archive."""
    with _errors(ctx, as_json=as_json):
        with progress_bar(enabled=not as_json) as progress:
            report = jobs.run_scrub(ctx.runtime(), progress=progress)

        def text() -> None:
            for name, reason in report.damaged:
                click.echo(f"{name}: damaged: {reason}")
            click.echo(
                f"scrub: {len(report.passed)} ok, {len(report.damaged)} damaged, "
                f"{len(report.skipped)} skipped (already damaged or gone)"
            )

        _emit(as_json, report.as_json(), text)
        if report.damaged:
            sys.exit(1)


@main.command()
@click.argument("archive")
@db_option
@arrow_option
@user_option
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Verify and say what would happen; change nothing.")
@json_option
@click.pass_obj
def restore(
    ctx: Context,
    archive: str,
    dbs: tuple[str, ...],
    arrow_db_only: bool,
    user_db_only: bool,
    force: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Verify, take a pre-restore safety backup, then restore into the live databases."""
    from backup_sidecar.archiver import read_manifest, resolve_archive  # noqa: PLC0415

    with _errors(ctx, as_json=as_json):
        rt = ctx.runtime()
        names = _db_options(dbs, arrow_db_only, user_db_only)
        if not force and not dry_run:
            path = resolve_archive(rt.backup_dir, archive)
            targets = names or [n for n in read_manifest(path).members() if n in rt.databases]
            if not sys.stdin.isatty():
                raise RestoreRefusedError("no terminal to confirm on; pass --force to restore")
            live = ", ".join(f"{n} ({rt.databases[n].path})" for n in targets if n in rt.databases)
            if not click.confirm(f"Replace {live} with the content of {path.name}?", err=True):
                raise RestoreRefusedError("not confirmed")
        with progress_bar(enabled=not as_json) as progress:
            result = jobs.run_restore(rt, archive, names=names, dry_run=dry_run, progress=progress)
        payload = jobs.restore_json(result)

        def text() -> None:
            if result.dry_run:
                click.echo(f"dry run: {result.archive} verified; a restore would:")
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

        _emit(as_json, payload, text)


def _prune(
    ctx: Context, policies: tuple[str, ...], keep: int | None, dry_run: bool, as_json: bool
) -> None:
    with _errors(ctx, as_json=as_json):
        result = jobs.run_prune(
            ctx.runtime(), policies=list(policies) or None, keep=keep, dry_run=dry_run
        )
        verb = "would delete" if dry_run else "deleted"
        payload = {
            "dry_run": dry_run,
            "deleted": [a.name for a in result.deleted],
            "skipped_busy": [a.name for a in result.skipped_busy],
            "errors": [f"{a.name}: {e}" for a, e in result.failed],
            "damaged": [{"archive": a.name, "reason": e} for a, e in result.damaged],
        }

        def text() -> None:
            for a, e in result.damaged:
                click.echo(f"damaged {a.path}: {e} (kept, not counted)", err=True)
            for a in result.deleted:
                click.echo(f"{verb} {a.path}")
            for a in result.skipped_busy:
                click.echo(f"kept {a.path}: in use by a verify or restore", err=True)
            if not result.deleted:
                click.echo("nothing to delete")

        _emit(as_json, payload, text)
        if result.failed:
            a, e = result.failed[0]
            _fail(f"could not delete archive {a.name!r}: {e}", 1)


@main.command()
@click.option("--policy", "policies", multiple=True, help="Only this policy (repeatable).")
@click.option("--keep", type=int, help="Archives to keep per policy (default: the policy's keep).")
@click.option("--dry-run", is_flag=True, help="Print what would be deleted; delete nothing.")
@json_option
@click.pass_obj
def prune(
    ctx: Context, policies: tuple[str, ...], keep: int | None, dry_run: bool, as_json: bool
) -> None:
    """Apply retention; the newest verified archive of a policy is never deleted."""
    _prune(ctx, policies, keep, dry_run, as_json)


@main.command()
@click.option("--policy", "policies", multiple=True, help="Only this policy (repeatable).")
@click.option("--keep", type=int, required=True, help="Archives to keep per policy.")
@click.option("--dry-run", is_flag=True)
@json_option
@click.pass_obj
def cleanup(
    ctx: Context, policies: tuple[str, ...], keep: int, dry_run: bool, as_json: bool
) -> None:
    """The seed's name for `prune --keep K`."""
    _prune(ctx, policies, keep, dry_run, as_json)


# The daemon-facing commands register themselves on `main`.
from backup_sidecar import cli_daemon, cli_data  # noqa: E402, F401
