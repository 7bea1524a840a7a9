"""The jobs' outcome events: every subscriber hears each one, and a broken subscriber breaks
neither the job nor the subscribers after it."""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from backup_sidecar import jobs
from backup_sidecar.archiver import DatabaseSpec
from backup_sidecar.jobs.outcomes import BackupFinished, Outcome, PruneFinished


def test_a_raising_subscriber_is_logged_and_the_others_still_hear(
    backup_dir: Path, wal_db: Path
) -> None:
    """A real backup with a subscriber that raises before one that records: the backup still
    returns its archive, the recorder gets the success and the prune of `daily`, and the
    failure is one `outcome_subscriber_failed` log line per event naming the event."""
    rt = jobs.Runtime(
        backup_dir=backup_dir, databases={"user": DatabaseSpec("user", wal_db)}, keep={"daily": 3}
    )
    heard: list[Outcome] = []

    def broken(event: Outcome) -> None:
        raise RuntimeError("subscriber bug")

    outcomes = jobs.Outcomes(broken)
    outcomes.subscribe(heard.append)
    with capture_logs() as logs:
        info = jobs.run_backup(rt, policy="daily", outcomes=outcomes)
        jobs.prune_after_backup(rt, policy="daily", just_written=info.name, outcomes=outcomes)
    assert info.path.is_file()
    backup, prune = heard
    assert isinstance(backup, BackupFinished)
    assert (backup.policy, backup.archive, backup.ok, backup.size_bytes, backup.scheduled) == (
        "daily", info.name, True, info.size_bytes, False,
    )  # fmt: skip
    assert set(backup.snapshot_seconds) == {"user"}
    assert prune == PruneFinished(policy="daily", deleted=0, errors=0)
    failed = [e for e in logs if e["event"] == "outcome_subscriber_failed"]
    assert [e["outcome"] for e in failed] == ["BackupFinished", "PruneFinished"]
