"""The scheduled full check of an incremental chain's head (issue 16 item 4).

A backup's own check runs in its read transaction (``check: quick`` on a busy database), and
a backup is listed ``verified`` only after its image was rebuilt and matched. So after each
scheduled backup of an incremental policy the daemon looks at the policy's newest verified
backup: if there is none, or it was made ``head_check`` (default 1d) or longer ago, it runs
`verify` of the policy's newest backup, the chain's head (rebuild, every page and the image
against their SHA-256, integrity_check, schema hash and row counts). A pass marks it
``verified``; a failure marks it damaged as the scrub does (``found_by: head check``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import structlog

from backup_sidecar.archiver import ArchiveStatus
from backup_sidecar.jobs.pagedamage import VERIFIED_DIR, marked_names
from backup_sidecar.jobs.pagescrub import recheck_page_backup
from backup_sidecar.jobs.pagestores import find_page_backup, store_names
from backup_sidecar.jobs.pagesummary import page_successes
from backup_sidecar.jobs.runtime import Runtime

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class HeadCheck:
    """A chain head's full check: the backup, and the fault (None: it passed)."""

    policy: str
    archive: str
    fault: str | None

    @property
    def ok(self) -> bool:
        return self.fault is None


def check_head_if_due(
    rt: Runtime, policy: str, *, now: datetime, should_stop: Callable[[], bool]
) -> HeadCheck | None:
    """Verify ``policy``'s newest incremental backup when its newest verified one is missing
    or ``head_check`` old (None: not an incremental policy, nothing to check, or not due)."""
    spec = rt.incremental.get(policy)
    if spec is None:
        return None
    backups = [a for a in page_successes(rt.backup_dir) if a.policy == policy]
    if not backups:
        return None
    verified: set[str] = set()
    for db in store_names(rt.backup_dir):
        verified |= marked_names(rt.backup_dir, VERIFIED_DIR, db)
    last = next((a for a in backups if a.name in verified), None)
    if last is not None and (now - last.created_at).total_seconds() < spec.head_check_s:
        return None
    newest = next((a for a in backups if a.status is not ArchiveStatus.DAMAGED), None)
    if newest is None:
        return None
    head = find_page_backup(rt.backup_dir, newest.name)
    if head is None or head.errors:  # gone meanwhile, or listed damaged already
        return None
    fault = recheck_page_backup(rt, head, found_by="head check", should_stop=should_stop)
    if fault is None:
        log.info("chain_head_verified", policy=policy, archive=head.name)
    else:
        log.error("chain_head_check_failed", policy=policy, archive=head.name, error=fault)
    return HeadCheck(policy, head.name, fault)
