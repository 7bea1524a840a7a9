"""Offsite retention in the daemon: run by the upload thread after each pass that could
write (it holds the prefix's lease), counted in ``backup_sidecar_offsite_pruned_total``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import structlog

from backup_sidecar import jobs, offsite
from backup_sidecar.errors import SidecarError
from backup_sidecar.jobs.offsite_pageprune import PagePrune, prune_pages
from backup_sidecar.jobs.offsite_prune import prune_offsite
from backup_sidecar.jobs.pagestores import store_names
from backup_sidecar.jobs.runtime import OffsiteSpec
from backup_sidecar.service.metric_families import MetricFamilies

log = structlog.get_logger(__name__)

_T = TypeVar("_T")


def prune_pass(
    *,
    store: offsite.Store,
    lease: offsite.Lease,
    rt: jobs.Runtime,
    spec: OffsiteSpec,
    families: MetricFamilies,
    reason: Callable[[BaseException], str],
) -> int:
    """Apply offsite retention once: the archives, then the page stores (jobs/offsite_pageprune.py:
    manifests, then unneeded packs; skipped, with no listing of ``pages/``, while no incremental
    policy and no page store exist). How many objects went. A failure is logged and counted
    (`offsite_failures_total`, ``reason`` naming the label), never the end of the upload thread."""
    result = _guarded(
        lambda: prune_offsite(
            store,
            lease=lease,
            keep=spec.keep,
            databases=rt.databases,
            policy_databases=rt.policy_databases,
            encrypted_only=bool(spec.recipients),
        ),
        families=families,
        reason=reason,
    )
    if result is None:
        return 0  # the store failed: the page stores wait for the next pass (one failure counted)
    for item in result.deleted:
        families.offsite_pruned.labels(item.policy).inc()
    if result.failed:  # each logged by prune_offsite; the next pass tries them again
        families.offsite_failures.labels("prune").inc(len(result.failed))

    def page_stores() -> PagePrune | None:
        if not rt.incremental and not store_names(rt.backup_dir):
            return None
        return prune_pages(
            store,
            lease=lease,
            backup_dir=rt.backup_dir,
            keep=spec.keep,
            databases=rt.databases,
            policy_databases=rt.policy_databases,
            encrypted_only=bool(spec.recipients),
        )

    pages = _guarded(page_stores, families=families, reason=reason)
    if pages is None:
        return len(result.deleted)
    for page_item in pages.manifests:
        families.offsite_pruned.labels(page_item.policy).inc()
    return len(result.deleted) + len(pages.manifests) + len(pages.packs)


def _guarded(
    step: Callable[[], _T], *, families: MetricFamilies, reason: Callable[[BaseException], str]
) -> _T | None:
    """``step()``, or None after logging and counting its failure."""
    try:
        return step()
    except (SidecarError, OSError) as exc:
        log.warning("offsite_prune_failed", error=str(exc), reason=reason(exc))
        families.offsite_failures.labels(reason(exc)).inc()
        return None
