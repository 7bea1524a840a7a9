"""What the CLI shows of the offsite store: `list --offsite`."""

from __future__ import annotations

import os
from datetime import UTC

import click

from backup_sidecar.cli.context import Context
from backup_sidecar.cli.output import emit, reported_errors

_ROW = "{:<44} {:<20} {:>12} {:<9} {}"


def list_offsite(ctx: Context, *, as_json: bool) -> None:
    """Print what the offsite store holds: each archive's and incremental backup's size,
    whether it is encrypted and confirmed (or why not), and one line per object that is not
    a readable archive or page store object."""
    from backup_sidecar.jobs.offsite import listing_json, open_store  # noqa: PLC0415
    from backup_sidecar.jobs.offsite_pagelist import page_copies  # noqa: PLC0415
    from backup_sidecar.offsite.pagekeys import list_pages  # noqa: PLC0415

    with reported_errors(ctx, as_json=as_json):
        spec = ctx.runtime().require_offsite()
        store = open_store(spec, environ=os.environ)
        listing = store.list(encrypted_only=bool(spec.recipients))
        pages = list_pages(store, encrypted_only=bool(spec.recipients))
        copies = page_copies(pages)
        seen = {p.key for p in listing.problems}
        problems = [*listing.problems, *(p for p in pages.problems if p.key not in seen)]
        payload = listing_json(store, listing)
        payload["incremental"] = [c.to_json() for c in copies]
        payload["problems"] = [{"key": p.key, "reason": p.reason} for p in problems]

        def table() -> None:
            if not listing.objects and not problems and not copies:
                click.echo(f"no archives in {store.url}")
                return
            click.echo(_ROW.format("OBJECT", "UPLOADED (UTC)", "SIZE", "ENCRYPTED", "STATUS"))
            for o in listing.objects:
                uploaded = o.modified.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
                status = "confirmed" if o.confirmed else f"unconfirmed: {o.reason}"
                row = (o.name, uploaded, o.size, "yes" if o.encrypted else "no", status)
                click.echo(_ROW.format(*row))
            for c in copies:  # incremental backups: manifests and the packs they need
                uploaded = c.modified.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
                status = "confirmed" if c.confirmed else f"unconfirmed: {c.reason}"
                what = f"{c.name} (incremental: {', '.join(c.databases)})"
                row = (what, uploaded, c.size, "yes" if c.encrypted else "no", status)
                click.echo(_ROW.format(*row))
            for p in problems:
                click.echo(f"problem: {p.key}: {p.reason}")

        emit(as_json, payload, table)
