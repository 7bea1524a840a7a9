"""What the CLI shows of the offsite store: `list --offsite`."""

from __future__ import annotations

import os
from datetime import UTC

import click

from backup_sidecar.cli.context import Context
from backup_sidecar.cli.output import emit, reported_errors

_ROW = "{:<44} {:<20} {:>12} {:<9} {}"


def list_offsite(ctx: Context, *, as_json: bool) -> None:
    """Print what the offsite store holds: each archive's size, whether it is encrypted and
    confirmed (or why not), and one line per object that is not a readable archive."""
    from backup_sidecar.jobs.offsite import listing_json, open_store  # noqa: PLC0415

    with reported_errors(ctx, as_json=as_json):
        spec = ctx.runtime().require_offsite()
        store = open_store(spec, environ=os.environ)
        listing = store.list(encrypted_only=bool(spec.recipients))

        def table() -> None:
            if not listing.objects and not listing.problems:
                click.echo(f"no archives in {store.url}")
                return
            click.echo(_ROW.format("OBJECT", "UPLOADED (UTC)", "SIZE", "ENCRYPTED", "STATUS"))
            for o in listing.objects:
                uploaded = o.modified.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
                status = "confirmed" if o.confirmed else f"unconfirmed: {o.reason}"
                row = (o.name, uploaded, o.size, "yes" if o.encrypted else "no", status)
                click.echo(_ROW.format(*row))
            for p in listing.problems:
                click.echo(f"problem: {p.key}: {p.reason}")

        emit(as_json, listing_json(store, listing), table)
