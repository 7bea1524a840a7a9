"""How a command prints its result, reports a failure and exits: the only code that does.

Exit codes: 0 success; 1 the operation failed; 2 bad usage or invalid configuration.
Errors are one line on stderr naming the file, key or archive at fault (traceback with -v).
"""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, NoReturn

import click

from backup_sidecar.cli.context import Context
from backup_sidecar.errors import SidecarError, UsageError


def fail(message: str, code: int) -> NoReturn:
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
def reported_errors(ctx: Context, *, as_json: bool = False) -> Iterator[None]:
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
            import json  # noqa: PLC0415 (healthcheck must start at once)

            with suppress(BrokenPipeError):
                click.echo(json.dumps(error_json(exc), indent=2))
        if isinstance(exc, UsageError):
            fail(str(exc), 2)
        if isinstance(exc, SidecarError):
            fail(str(exc), 1)
        where = f" ({exc.filename})" if exc.filename else ""
        fail(f"{exc.strerror or exc}{where}", 1)


def emit(as_json: bool, payload: Any, text: Callable[[], None]) -> None:
    if as_json:
        import json  # noqa: PLC0415 (healthcheck must start at once)

        click.echo(json.dumps(payload, indent=2, default=str))
    else:
        text()
