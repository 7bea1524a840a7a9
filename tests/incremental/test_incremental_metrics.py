"""Each incremental backup moves its metrics: pages read, pages new, bytes stored (counters)
and chain length (gauge), per policy and database; a reload that drops the policy drops them."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry

from backup_sidecar import jobs
from backup_sidecar.service.metrics import Metrics
from backup_sidecar.service.subscribers import MetricsSubscriber
from support.databases import make_db
from support.incremental import incremental_runtime, rebuild_to


def test_incremental_backups_count_pages_bytes_and_chain_length(
    tmp_path: Path, backup_dir: Path
) -> None:
    """Two backups with a change between: the counters are the sums of the manifests' own
    stats, the chain length is the second's (2); forgetting the policy removes the series."""
    user = make_db(tmp_path / "user_data.db", wal=True, rows=2000)
    registry = CollectorRegistry()
    metrics = Metrics(
        registry, version="0", policies=["hourly"], databases=["user"],
        clock=lambda: datetime.now(UTC),
    )  # fmt: skip
    outcomes = jobs.Outcomes(MetricsSubscriber(metrics))
    rt = incremental_runtime(backup_dir, {"user": user})
    names = [jobs.run_backup(rt, policy="hourly", outcomes=outcomes).name]
    with sqlite3.connect(user) as conn:
        conn.execute("UPDATE items SET body = body || 'x' WHERE id % 50 = 0")
    conn.close()
    names.append(jobs.run_backup(rt, policy="hourly", outcomes=outcomes).name)
    stats = [rebuild_to(backup_dir, "user", n, tmp_path / f"{n}.db").stats for n in names]
    labels = {"policy": "hourly", "database": "user"}

    def value(name: str) -> float | None:
        return registry.get_sample_value("backup_sidecar_incremental_" + name, labels)

    assert value("pages_read_total") == sum(s["pages_read"] for s in stats)
    assert value("pages_new_total") == sum(s["pages_new"] for s in stats)
    assert value("stored_bytes_total") == sum(s["bytes_stored"] for s in stats)
    assert 0 < stats[1]["bytes_stored"] < stats[0]["bytes_stored"]
    assert value("chain_length") == 2
    metrics.forget(policies=["hourly"])
    assert value("chain_length") is None and value("pages_read_total") is None
