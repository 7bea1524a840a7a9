"""The one-shot operations behind every entry point, one module per action.

The CLI, the scheduler and the control socket all run backups, verifies, restores, prunes,
scrubs and drills through these functions, so each gets the same per-database locking, the
same log events and the same outcome events whichever way it was asked for. Each takes the
`Runtime` (what to work on), an `Effort` (how hard; default: the runtime's) and an `Outcomes`
publisher (who hears how it ended; default: no one).
"""

from backup_sidecar.jobs.backup import run_backup
from backup_sidecar.jobs.backupdir import archive_json, clean_leftovers, listing, mark_damaged
from backup_sidecar.jobs.drill import DrillReport, run_drill
from backup_sidecar.jobs.effort import Effort
from backup_sidecar.jobs.outcomes import Outcomes, failure_text
from backup_sidecar.jobs.pagecheck import with_incremental
from backup_sidecar.jobs.prune import prune_after_backup, prune_json, run_prune
from backup_sidecar.jobs.restore import restore_json, run_restore
from backup_sidecar.jobs.runtime import MANUAL_POLICY, Runtime
from backup_sidecar.jobs.scrub import ScrubReport, run_scrub
from backup_sidecar.jobs.verify import run_verify

__all__ = [
    "MANUAL_POLICY",
    "DrillReport",
    "Effort",
    "Outcomes",
    "Runtime",
    "ScrubReport",
    "archive_json",
    "clean_leftovers",
    "failure_text",
    "listing",
    "mark_damaged",
    "prune_after_backup",
    "prune_json",
    "restore_json",
    "run_backup",
    "run_drill",
    "run_prune",
    "run_restore",
    "run_scrub",
    "run_verify",
    "with_incremental",
]
