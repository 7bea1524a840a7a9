"""Every way a backup job can fail is logged and counted as an error, not only the failures the
archiver names (a bug's exception must still move `backup_runs_total{result="error"}`)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from backup_sidecar import archiver, jobs
from backup_sidecar.archiver import DatabaseSpec
from backup_sidecar.service.metrics import Metrics
from backup_sidecar.service.subscribers import MetricsSubscriber
from support.databases import make_db


@pytest.mark.parametrize("raised", [RuntimeError("boom"), ValueError("unexpected")])
def test_a_backup_failing_with_any_exception_counts_as_an_error(
    tmp_path: Path, backup_dir: Path, monkeypatch: pytest.MonkeyPatch, raised: Exception
) -> None:
    """An exception that is not one of the sidecar's own (injected at the archiver boundary)
    still counts the run as an error and propagates; before, such a run counted neither ok
    nor error, so the failure alerts never saw it."""
    db = make_db(tmp_path / "user_data.db", wal=True)
    registry = CollectorRegistry()
    metrics = Metrics(
        registry, version="0", policies=["manual"], databases=["user"],
        clock=lambda: datetime.now(UTC),
    )  # fmt: skip
    rt = jobs.Runtime(backup_dir=backup_dir, databases={"user": DatabaseSpec("user", db)}, keep={})

    def fail(*args: object, **kwargs: object) -> None:
        raise raised

    monkeypatch.setattr(archiver, "create_backup", fail)
    with pytest.raises(type(raised)):
        jobs.run_backup(rt, policy="manual", outcomes=jobs.Outcomes(MetricsSubscriber(metrics)))
    runs = "backup_sidecar_backup_runs_total"
    assert registry.get_sample_value(runs, {"policy": "manual", "result": "error"}) == 1
    assert registry.get_sample_value(runs, {"policy": "manual", "result": "ok"}) == 0
