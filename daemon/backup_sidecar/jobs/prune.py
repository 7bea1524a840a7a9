"""The prune job: retention applied, never deleting the archive a policy relies on."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import structlog

from backup_sidecar import archiver
from backup_sidecar.archiver import ArchiveInfo
from backup_sidecar.errors import SidecarError, UnknownPrunePolicyError, UsageError
from backup_sidecar.jobs.backupdir import listing, mark_damaged, refuse_unsafe_entries
from backup_sidecar.jobs.outcomes import Outcomes, PruneFinished
from backup_sidecar.jobs.pageprune import prune_pages
from backup_sidecar.jobs.runtime import MANUAL_POLICY, Runtime

log = structlog.get_logger(__name__)


def run_prune(
    rt: Runtime,
    *,
    policies: Sequence[str] | None = None,
    keep: int | None = None,
    dry_run: bool = False,
    wait: float | None = None,
    outcomes: Outcomes | None = None,
    spare: Collection[str] = (),
    checks: archiver.ReadCheckCache | None = None,
    catalog: archiver.Catalog | None = None,
) -> archiver.PruneResult:
    """Apply retention (each policy's rules, archiver/gfs.py; ``keep`` overrides them with a
    plain count) and report what went, and why the rest stays.

    Archives named in ``spare`` are never deleted: the daemon spares the backup it just wrote
    (retention orders by creation sequence, so it is the newest anyway; an archive of an older
    version, without one, would otherwise be judged by its wall-clock time).

    Before anything is deleted, the archive each policy relies on (its newest verified one) is
    read to the end (readcheck.py); one that fails is marked damaged (not with ``dry_run``) and
    the next one is tried. ``checks`` carries results between prunes (the daemon keeps one);
    without it every prune reads again.
    """
    if keep is not None and keep < 0:
        raise UsageError(f"--keep must be >= 0, got {keep}")
    refuse_unsafe_entries(rt)
    archives = listing(rt, catalog)
    present = {a.policy for a in archives}
    known = sorted(present | set(rt.keep) | {MANUAL_POLICY})
    for policy in policies or ():
        if policy not in known:  # a typo would otherwise say "nothing to delete", exit 0
            raise UnknownPrunePolicyError(policy, known)
    chosen = list(policies) if policies else sorted(present | set(rt.keep))
    rules: dict[str, archiver.KeepRules] = {}
    for p in chosen:
        if keep is not None and (policies or p != archiver.PRE_RESTORE_POLICY):
            rules[p] = archiver.KeepRules(last=keep)
        elif (own := rt.rules(p)) is not None:
            rules[p] = own
    checks = checks if checks is not None else archiver.ReadCheckCache()
    damaged: list[tuple[ArchiveInfo, str]] = []

    def good(archive: ArchiveInfo) -> bool:
        try:
            fault = checks.check(archive.path)
        except FileNotFoundError:
            return False  # gone meanwhile: nothing to rely on, nothing to mark
        if fault is None:
            return True
        damaged.append((archive, fault))
        if not dry_run:
            mark_damaged(rt, archive, fault, found_by="prune")
        return False

    chosen_rules = archiver.select(
        archives, rules=rules, policies=chosen, good=good, tz=rt.timezone
    )
    expired = [a for a in chosen_rules.expired if a.name not in spare]
    kept = chosen_rules.kept
    kept += [(a, ("just written",)) for a in chosen_rules.expired if a.name in spare]
    # Incremental policies: the same rules on their backups, never the newest (pageprune.py).
    incremental = {p: r for p, r in rules.items() if p in rt.incremental}
    pages = prune_pages(rt, rules=incremental, spare=spare, dry_run=dry_run)
    kept += pages.kept
    if dry_run:
        return archiver.PruneResult(deleted=expired + pages.deleted, damaged=damaged, kept=kept)
    # The locks of the databases the expired archives hold (all for one whose databases are
    # unknown; none when nothing expires): another database's restore no longer holds it up.
    held = {db for a in expired for db in (a.databases or rt.databases)}
    needed = sorted(held & rt.databases.keys())
    with archiver.database_locks(rt.backup_dir, needed, wait=wait):
        result = archiver.delete_archives(expired)
    result.deleted.extend(pages.deleted)
    result.failed.extend(pages.failed)
    result.gc_failed.extend(pages.gc_failed)
    result.damaged.extend(damaged)
    result.kept.extend(kept)
    for policy in chosen:
        deleted = sum(1 for a in result.deleted if a.policy == policy)
        errors = sum(1 for a, _ in result.failed if a.policy == policy)
        if outcomes:
            outcomes.publish(PruneFinished(policy=policy, deleted=deleted, errors=errors))
    for archive in result.deleted:
        log.info("archive_pruned", archive=archive.name, policy=archive.policy)
    for archive, error in result.failed:
        log.error("prune_failed", archive=archive.name, policy=archive.policy, error=error)
    return result


def prune_after_backup(
    rt: Runtime,
    *,
    policy: str,
    just_written: str,
    outcomes: Outcomes | None,
    checks: archiver.ReadCheckCache | None = None,
    catalog: archiver.Catalog | None = None,
) -> None:
    """Apply ``policy``'s keep after the daemon wrote one of its archives: a scheduled backup,
    a socket backup into the policy, or a restore's `pre_restore` safety backup (they would
    pile up: no schedule ever prunes that policy). Never deletes the one just written; a
    failure is logged and counted, never a failed backup (the next one prunes again). A policy
    without a keep (``manual``) is left as it is."""
    if policy not in rt.keep:
        return
    try:
        run_prune(
            rt,
            policies=[policy],
            outcomes=outcomes,
            wait=60.0,
            spare=[just_written],
            checks=checks,
            catalog=catalog,
        )
    except (SidecarError, OSError) as exc:  # e.g. the backup directory just vanished
        log.error("prune_failed", policy=policy, error=str(exc))
        if outcomes:
            outcomes.publish(PruneFinished(policy=policy, deleted=0, errors=1))


def prune_json(result: archiver.PruneResult, *, dry_run: bool) -> dict[str, Any]:
    """A prune's outcome as the CLI's ``--json`` and the socket answer it."""
    return {
        "dry_run": dry_run,
        "deleted": [a.name for a in result.deleted],
        "skipped_busy": [a.name for a in result.skipped_busy],
        "errors": [
            *(f"{a.name}: {e}" for a, e in result.failed),
            *(f"page store {db!r}: {e}" for db, e in result.gc_failed),
        ],
        "damaged": [{"archive": a.name, "reason": e} for a, e in result.damaged],
        "kept": [
            {"archive": a.name, "policy": a.policy, "reasons": list(why)} for a, why in result.kept
        ],
    }
