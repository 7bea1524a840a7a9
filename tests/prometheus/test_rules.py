"""config/prometheus.yml and config/alerts.yml through Debian's promtool."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from support.paths import ROOT
from support.prometheus import ALERTS, JOB, require_binary, rules_for_test

PROMETHEUS_YML = ROOT / "config" / "prometheus.yml"
UNIT_TESTS = ROOT / "tests" / "prometheus" / "alerts_test.yml"
#: The alerts the issue asks for; each must exist and have firing and quiet unit tests.
REQUIRED_ALERTS = {
    "BackupSidecarBackupOverdue",
    "BackupSidecarBackupsFailing",
    "BackupSidecarDatabaseUnhealthy",
    "BackupSidecarBackupDirFillingUp",
    "BackupSidecarRestoreDrillFailing",
    "BackupSidecarArchiveDamaged",
    "BackupSidecarDown",
    "BackupSidecarOffsiteLagging",
    "BackupSidecarOffsiteVerifyFailing",
    "BackupSidecarDatabaseWalLarge",
    "BackupSidecarDatabaseFreelistHigh",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *args],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip


def _alert_rules(path: Path) -> dict[str, dict[str, object]]:
    doc = yaml.safe_load(path.read_text())
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}


def test_alert_rules_pass_promtool_check() -> None:
    """`promtool check rules` accepts the shipped alert rules (syntax, PromQL, templates)."""
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_config_passes_promtool_check() -> None:
    """`promtool check config` accepts prometheus.yml and the rule file it names, and the file
    scrapes the sidecar under the job name the alerts select on."""
    result = promtool("check", "config", str(PROMETHEUS_YML))
    assert result.returncode == 0, result.stdout + result.stderr
    doc = yaml.safe_load(PROMETHEUS_YML.read_text())
    jobs = {job["job_name"]: job for job in doc["scrape_configs"]}
    assert JOB in jobs
    targets = [t for sc in jobs[JOB]["static_configs"] for t in sc["targets"]]
    assert targets == ["backup-sidecar:9464"]  # the compose service name and metrics port
    assert f'up{{job="{JOB}"}}' in str(_alert_rules(ALERTS)["BackupSidecarDown"]["expr"])


def test_alert_unit_tests_pass() -> None:
    """`promtool test rules`: every alert fires where it should and stays quiet where not."""
    result = promtool("test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_firing_and_quiet_unit_tests() -> None:
    """Each required alert exists, carries a severity and a summary, and the unit tests hold
    at least one case where it fires and one where it is expected not to."""
    rules = _alert_rules(ALERTS)
    assert set(rules) >= REQUIRED_ALERTS
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    cases = [c for t in tests for c in t.get("alert_rule_test", [])]
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name  # type: ignore[index]
        assert "summary" in rule["annotations"], name  # type: ignore[operator]
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name}: no case where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{name}: no case where it stays quiet"


def test_rules_for_the_live_test_change_only_for_durations() -> None:
    """The live test's rule file differs from the shipped one in `for:` alone: the same
    groups, names, expressions, labels and annotations."""
    shipped = yaml.safe_load(ALERTS.read_text())
    rewritten = yaml.safe_load(rules_for_test(ALERTS))
    for group in (*shipped["groups"], *rewritten["groups"]):
        for rule in group["rules"]:
            rule.pop("for", None)
    assert rewritten == shipped


def _readme_anchors() -> set[str]:
    """The anchors GitHub gives README.md's headings (lower case, punctuation dropped)."""
    headings = re.findall(r"^#+ (.+)$", (ROOT / "README.md").read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_alert_has_a_summary_description_and_runbook_in_the_readme() -> None:
    """Each shipped alert has `summary`, `description` and a `runbook_url` pointing at a
    README section that exists (its own, under "Alert runbook")."""
    anchors = _readme_anchors()
    for name, rule in _alert_rules(ALERTS).items():
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        assert annotations.get("summary") and annotations.get("description"), name
        url = str(annotations.get("runbook_url", ""))
        assert url == f"README.md#{name.lower()}", name
        assert url.partition("#")[2] in anchors, f"{name}: no README section {url}"
