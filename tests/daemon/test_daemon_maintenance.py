"""Database maintenance in a real daemon (issue 17 item 4): a WAL past its bound is truncated
by the health watcher's checkpoint while /healthz stays 200 (a warning, not an outage), the
thresholds are exported for the alerts, and a backup asked for on the socket is followed by a
VACUUM inside the window that shrinks the database while a writer commits within the bound."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from support.daemon import DaemonRunner
from support.databases import Writer, integrity
from support.metrics import sample

MIB = 1024 * 1024


def test_daemon_checkpoints_a_big_wal_and_vacuums_after_a_backup(
    tmp_path: Path,
    daemons: DaemonRunner,
    daemon_config: Callable[..., dict[str, Any]],
    writer_process: Callable[..., Writer],
) -> None:
    """Checkpoint (TRUNCATE) of an 8 MiB WAL above a 1 MiB bound with /healthz 200 throughout;
    the max_wal_bytes and max_freelist_ratio gauges scraped; a socket backup then a VACUUM of
    the 75 % free database; the writer saw no error and never waited past max_writer_wait."""
    db = tmp_path / "user_data.db"
    grower = sqlite3.connect(db, isolation_level=None)
    grower.execute("PRAGMA journal_mode=wal")
    grower.execute("PRAGMA wal_autocheckpoint=0")  # the WAL grows until the sidecar acts
    grower.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, body BLOB)")
    grower.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 512) "
        "INSERT INTO blobs(body) SELECT randomblob(16384) FROM n"
    )
    grower.execute("DELETE FROM blobs WHERE id % 4 != 0")
    assert db.with_name(db.name + "-wal").stat().st_size > 8 * MIB
    writer = writer_process(db, rate=50)
    now = datetime.now(UTC)
    window = f"{now - timedelta(hours=1):%H:%M}-{now + timedelta(hours=1):%H:%M}"
    cfg = daemon_config(
        databases={"user": db},
        policies={"nightly": {"keep": 2}, "pre_restore": {"keep": 2}},
        maintenance={"max_wal_bytes": MIB, "max_freelist_ratio": 0.2, "vacuum": True,
                     "window": window, "max_writer_wait": "10s"},
    )  # fmt: skip
    d = daemons.start(cfg)
    done = d.log.wait("maintenance_completed", op="checkpoint")
    assert done["busy"] is False and done["wal_bytes_before"] > 8 * MIB
    assert d.healthz()[0] == 200
    scrape = d.scrape()
    assert sample(scrape, "backup_sidecar_maintenance_max_wal_bytes", database="user") == MIB
    ratio = sample(scrape, "backup_sidecar_maintenance_max_freelist_ratio", database="user")
    assert ratio == 0.2
    size = db.stat().st_size
    d.request("backup", policy="nightly")
    vacuumed = d.log.wait("maintenance_completed", op="vacuum", timeout=60)
    assert vacuumed["bytes_after"] < vacuumed["bytes_before"] / 2
    assert db.stat().st_size < size / 2
    report = writer.stop()
    grower.close()
    assert report["errors"] == 0 and report["max_latency_s"] < 10
    assert integrity(db) == "ok"
    runs = sample(
        d.scrape(), "backup_sidecar_maintenance_runs_total", database="user", op="vacuum",
        result="ok",
    )  # fmt: skip
    assert runs == 1
