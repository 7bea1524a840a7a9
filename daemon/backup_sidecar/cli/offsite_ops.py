"""`verify --offsite` and `prune --offsite`: the daemon's scheduled offsite verify and offsite
retention, run once from the command line."""

from __future__ import annotations

import os

import click

from backup_sidecar.cli.context import Context
from backup_sidecar.cli.output import emit, fail, reported_errors


def verify_offsite_cmd(ctx: Context, *, ref: str | None, latest: bool, as_json: bool) -> None:
    """Download, decrypt and fully verify offsite copies (a temporary directory, never the
    backup directory). Exit 1 unless every copy verified: failed or skipped (no identity)."""
    from backup_sidecar.jobs.offsite_ours import Ours  # noqa: PLC0415
    from backup_sidecar.jobs.offsite_verify import OK, verify_offsite  # noqa: PLC0415

    if ref is not None and latest:
        raise click.UsageError("give an archive name or --latest, not both")
    with reported_errors(ctx, as_json=as_json):
        rt = ctx.runtime()
        spec = rt.require_offsite()
        done = verify_offsite(spec, environ=os.environ, ref=ref, latest=latest, ours=Ours.of(rt))
        payload = {
            "url": spec.url,
            "ok": bool(done) and all(d.result == OK for d in done),
            "copies": [
                {
                    "policy": d.policy,
                    "object": d.object,
                    "result": d.result,
                    "reason": d.reason,
                    "error": d.error,
                    "databases": list(d.databases),
                }
                for d in done
            ],
        }

        def text() -> None:
            for d in done:
                if d.result == OK:
                    click.echo(f"{d.object}: ok ({', '.join(d.databases)})")
                else:
                    click.echo(f"{d.object}: {d.result}: {d.error}")

        emit(as_json, payload, text)
    if not done:
        fail(f"no offsite copies to verify in {spec.url}", 1)
    if not payload["ok"]:
        bad = next(d for d in done if d.result != OK)
        fail(f"offsite copy {bad.object!r} {bad.result}: {bad.error}", 1)


def prune_offsite_cmd(ctx: Context, *, dry_run: bool, as_json: bool) -> None:
    """Apply offsite retention once (`offsite.keep`); takes the prefix's lease (refused while
    another sidecar, such as the running daemon, holds it), released at the end."""
    from backup_sidecar import offsite  # noqa: PLC0415
    from backup_sidecar.jobs.offsite import open_store  # noqa: PLC0415
    from backup_sidecar.jobs.offsite_pageprune import prune_pages  # noqa: PLC0415
    from backup_sidecar.jobs.offsite_prune import prune_offsite  # noqa: PLC0415

    with reported_errors(ctx, as_json=as_json):
        rt = ctx.runtime()
        spec = rt.require_offsite()
        store = open_store(spec, environ=os.environ)
        lease = offsite.Lease(store, ttl=spec.lease_ttl)
        try:
            if not dry_run:
                lease.acquire()  # read-only: prune_offsite refuses, naming the holder
            result = prune_offsite(
                store,
                lease=lease,
                keep=spec.keep,
                databases=rt.databases,
                policy_databases=rt.policy_databases,
                dry_run=dry_run,
                encrypted_only=bool(spec.recipients),
            )
            pages = prune_pages(  # incremental backups: manifests, then unneeded packs
                store,
                lease=lease,
                backup_dir=rt.backup_dir,
                keep=spec.keep,
                databases=rt.databases,
                policy_databases=rt.policy_databases,
                encrypted_only=bool(spec.recipients),
                dry_run=dry_run,
            )
        finally:
            lease.release()
        verb = "would delete" if dry_run else "deleted"
        payload = {
            "url": store.url,
            "dry_run": dry_run,
            "deleted": [
                {"object": e.object, "policy": e.policy}
                for e in [*result.deleted, *pages.manifests]
            ],
            "packs": list(pages.packs),
            "errors": [f"{e.object}: {err}" for e, err in result.failed],
        }

        def text() -> None:
            for e in [*result.deleted, *pages.manifests]:
                click.echo(f"{verb} {e.object} ({e.policy})")
            for name in pages.packs:
                click.echo(f"{verb} {name} (no kept backup needs it)")
            if not result.deleted and not pages.manifests and not pages.packs:
                click.echo("nothing to delete")

        emit(as_json, payload, text)
        if result.failed:
            e, err = result.failed[0]
            fail(f"could not delete offsite object {e.object!r}: {err}", 1)
