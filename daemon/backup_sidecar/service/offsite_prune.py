"""Offsite retention in the daemon: run by the upload thread after each pass that could
write (it holds the prefix's lease), counted in ``backup_sidecar_offsite_pruned_total``."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from backup_sidecar import jobs, offsite
from backup_sidecar.errors import SidecarError
from backup_sidecar.jobs.offsite_pageprune import prune_pages
from backup_sidecar.jobs.offsite_prune import prune_offsite
from backup_sidecar.jobs.pagestores import store_names
from backup_sidecar.jobs.runtime import OffsiteSpec
from backup_sidecar.service.metric_families import MetricFamilies

log = structlog.get_logger(__name__)


def prune_pass(
    *,
    store: offsite.Store,
    lease: offsite.Lease,
    rt: jobs.Runtime,
    spec: OffsiteSpec,
    families: MetricFamilies,
    reason: Callable[[BaseException], str],
) -> int:
    """Apply offsite retention once; how many objects went. A failure is logged and counted
    (`offsite_failures_total`, ``reason`` naming the label), never the end of the upload thread."""
    try:
        result = prune_offsite(
            store,
            lease=lease,
            keep=spec.keep,
            databases=rt.databases,
            policy_databases=rt.policy_databases,
            encrypted_only=bool(spec.recipients),
        )
    except (SidecarError, OSError) as exc:
        log.warning("offsite_prune_failed", error=str(exc), reason=reason(exc))
        families.offsite_failures.labels(reason(exc)).inc()
        return 0
    for item in result.deleted:
        families.offsite_pruned.labels(item.policy).inc()
    if result.failed:  # each logged by prune_offsite; the next pass tries them again
        families.offsite_failures.labels("prune").inc(len(result.failed))
    return len(result.deleted) + _pages(
        store=store, lease=lease, rt=rt, spec=spec, families=families, reason=reason
    )


def _pages(
    *,
    store: offsite.Store,
    lease: offsite.Lease,
    rt: jobs.Runtime,
    spec: OffsiteSpec,
    families: MetricFamilies,
    reason: Callable[[BaseException], str],
) -> int:
    """The page stores' retention (jobs/offsite_pageprune.py): manifests, then unneeded packs;
    skipped (no listing of ``pages/``) while no incremental policy and no page store exist."""
    try:
        if not rt.incremental and not store_names(rt.backup_dir):
            return 0
        result = prune_pages(
            store,
            lease=lease,
            backup_dir=rt.backup_dir,
            keep=spec.keep,
            databases=rt.databases,
            policy_databases=rt.policy_databases,
            encrypted_only=bool(spec.recipients),
        )
    except (SidecarError, OSError) as exc:
        log.warning("offsite_prune_failed", error=str(exc), reason=reason(exc))
        families.offsite_failures.labels(reason(exc)).inc()
        return 0
    for item in result.manifests:
        families.offsite_pruned.labels(item.policy).inc()
    return len(result.manifests) + len(result.packs)
