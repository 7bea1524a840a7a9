"""A real Prometheus scrapes a real daemon: series and labels, shipped alerts, dashboard PromQL."""

from __future__ import annotations

import json
import re
from typing import Any

from backup_sidecar import __version__
from support.prometheus import DASHBOARD, DEADLINE_S, JOB, Prometheus, SidecarDaemon
from support.waiting import wait_until

#: Grafana's variables, as Grafana would expand them for a 1s scrape interval and "All".
DASHBOARD_VARIABLES = {
    "$__rate_interval": "4s",
    "$__interval": "1s",
    "$__range": "5m",
    "${datasource}": "prometheus",
}
#: Panels whose queries may rightly be empty while nothing has happened yet, and why.
MAY_BE_EMPTY = {
    "Firing alerts": "no alert fires on a healthy daemon",
    "Control socket requests": "nobody used the control socket (the query keeps only > 0)",
    "Offsite failures by reason": "the file:// store answers every pass (the query keeps > 0)",
}


def _value(sample: dict[str, Any]) -> float:
    return float(sample["value"][1])


def test_sidecar_series_arrive_with_their_labels(
    sidecar_daemon: SidecarDaemon, prometheus: Prometheus
) -> None:
    """Prometheus scrapes the daemon as a healthy target of the `backup-sidecar` job, and its
    series carry the job/instance labels plus the sidecar's own (policy, result, database,
    version), never an archive name."""
    target = sidecar_daemon.target

    def up() -> list[dict[str, Any]]:
        targets = prometheus.api("targets")["activeTargets"]
        return [t for t in targets if t["labels"]["instance"] == target and t["health"] == "up"]

    [active] = wait_until(up, what="the sidecar target to be up", timeout=DEADLINE_S)
    assert active["labels"]["job"] == JOB
    assert active["scrapeUrl"] == f"http://{target}/metrics"

    selector = f'job="{JOB}", instance="{target}"'
    ok_runs = wait_until(
        lambda: [
            s
            for s in prometheus.query(
                f'backup_sidecar_backup_runs_total{{{selector}, policy="frequent", result="ok"}}'
            )
            if _value(s) >= 1
        ],
        what="a successful scheduled backup in Prometheus",
        timeout=DEADLINE_S,
    )
    assert ok_runs[0]["metric"]["__name__"] == "backup_sidecar_backup_runs_total"

    [info] = prometheus.query(f"backup_sidecar_build_info{{{selector}}}")
    assert info["metric"]["version"] == __version__
    assert {"python_version", "sqlite_version"} <= set(info["metric"])

    healthy = wait_until(
        lambda: prometheus.query(f"backup_sidecar_database_healthy{{{selector}}} == 1"),
        what="both databases healthy",
        timeout=30,
    )
    assert sorted(s["metric"]["database"] for s in healthy) == ["arrow", "user"]

    [last] = prometheus.query(
        f'backup_sidecar_backup_last_success_timestamp_seconds{{{selector}, policy="frequent"}}'
    )
    assert _value(last) > 0
    [rpo] = prometheus.query(
        f'backup_sidecar_backup_max_age_seconds{{{selector}, policy="frequent"}}'
    )
    assert _value(rpo) == 3600  # the daemon's health.max_backup_age
    assert prometheus.query(f"backup_sidecar_backup_dir_free_bytes{{{selector}}} > 0")
    assert prometheus.query(f'backup_sidecar_archives{{{selector}, policy="frequent"}} >= 1')

    series = prometheus.api(
        "series", **{"match[]": f'{{__name__=~"backup_sidecar_.+", {selector}}}'}
    )
    archive_names = [a.name.removesuffix(".tar.gz") for a in sidecar_daemon.backup_dir.glob("*")]
    for labels in series:
        for key, value in labels.items():
            assert value not in archive_names, f"archive name in label {key}: {labels}"
            assert not re.fullmatch(r"\w+_\d{8}_\d{6}", value), f"archive-like label: {labels}"


def test_failing_backups_fire_the_shipped_alerts(
    sidecar_daemon: SidecarDaemon, prometheus: Prometheus
) -> None:
    """When the user database is replaced by a file that is not SQLite, every scheduled backup
    fails: the shipped BackupSidecarBackupsFailing alert (for policy `frequent`) and
    BackupSidecarDatabaseUnhealthy (for database `user`) become active in Prometheus, and the
    other databases and policies do not."""
    selector = f'job="{JOB}", instance="{sidecar_daemon.target}"'
    wait_until(
        lambda: prometheus.query(
            f'backup_sidecar_backup_runs_total{{{selector}, policy="frequent", result="ok"}} >= 1'
        ),
        what="a successful backup before the damage",
        timeout=DEADLINE_S,
    )
    assert not prometheus.alerts("BackupSidecarBackupsFailing")

    broken = sidecar_daemon.user_db.with_name("broken.tmp")
    broken.write_bytes(b"this is not an SQLite database\n" * 200)
    for suffix in ("-wal", "-shm"):
        sidecar_daemon.user_db.with_name(sidecar_daemon.user_db.name + suffix).unlink(
            missing_ok=True
        )
    broken.replace(sidecar_daemon.user_db)

    wait_until(
        lambda: prometheus.query(
            f'increase(backup_sidecar_backup_runs_total{{{selector}, result="error"}}[1m]) > 0'
        ),
        what="failed backups counted in Prometheus",
        timeout=DEADLINE_S,
    )
    failing = wait_until(
        lambda: prometheus.alerts("BackupSidecarBackupsFailing"),
        what="BackupSidecarBackupsFailing to fire",
        timeout=DEADLINE_S,
    )
    assert [a["labels"]["policy"] for a in failing] == ["frequent"]
    assert failing[0]["labels"]["severity"] == "warning"
    assert "frequent" in failing[0]["annotations"]["summary"]

    unhealthy = wait_until(
        lambda: prometheus.alerts("BackupSidecarDatabaseUnhealthy"),
        what="BackupSidecarDatabaseUnhealthy to fire",
        timeout=DEADLINE_S,
    )
    assert [a["labels"]["database"] for a in unhealthy] == ["user"]
    assert not prometheus.alerts("BackupSidecarDown")


def _panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel, rows' nested panels included."""
    found = []
    stack = list(dashboard["panels"])
    while stack:
        panel = stack.pop(0)
        stack.extend(panel.get("panels", []))
        found += [(panel["title"], t["expr"]) for t in panel.get("targets", []) if t.get("expr")]
    return found


def _expand(expr: str) -> str:
    for name, value in DASHBOARD_VARIABLES.items():
        expr = expr.replace(name, value)
    # Multi-value template variables set to "All" expand to their allValue, ".*".
    return re.sub(r"\$\{?(job|instance|policy|database)\}?", ".*", expr)


def test_every_dashboard_query_evaluates(
    sidecar_daemon: SidecarDaemon, prometheus: Prometheus
) -> None:
    """Every PromQL target of the Grafana dashboard (and its variable and annotation queries'
    metrics) runs without error against a Prometheus that scrapes a live daemon, and every
    panel but the listed event panels shows data once backups and drills have run."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = _panel_queries(dashboard)
    assert len({title for title, _ in queries}) >= 12
    selector = f'job="{JOB}", instance="{sidecar_daemon.target}"'
    wait_until(
        lambda: (
            prometheus.query(
                f'increase(backup_sidecar_backup_runs_total{{{selector}, result="ok"}}[4s]) > 0'
            )
            and prometheus.query(f"count_over_time(up{{{selector}}}[1m]) >= 5")
        ),
        what="a few scrapes with backups in them",
        timeout=DEADLINE_S,
    )

    with_data: dict[str, bool] = {}
    for title, expr in queries:
        expanded = _expand(expr)
        assert "$" not in expanded, f"{title}: unexpanded variable in {expanded}"
        result = prometheus.query(expanded)  # an error fails here, naming the panel's query
        with_data[title] = with_data.get(title, False) or bool(result)
    for variable in dashboard["templating"]["list"]:
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable.get("definition", ""))
        if match:  # Grafana asks the series API; the PromQL selector inside must be valid
            prometheus.api("series", **{"match[]": _expand(match.group(1))})
    for annotation in dashboard["annotations"]["list"]:
        prometheus.query(_expand(annotation["expr"]))
    unexpected = [t for t, data in with_data.items() if not data and t not in MAY_BE_EMPTY]
    assert not unexpected, f"panels without data: {unexpected}"
