"""The GFS retention keys of a policy: how they load, map onto the runtime's rules, and the
one-line errors of the contradictory or missing ones."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from backup_sidecar.archiver import UNLIMITED, KeepRules
from backup_sidecar.errors import ConfigError
from backup_sidecar.jobs import Runtime
from backup_sidecar.settings import load_settings
from support.cli import run_cli


def load(tmp_path: Path, text: str) -> Runtime:
    path = tmp_path / "sidecar.yaml"
    path.write_text(f"backup_dir: {tmp_path / 'b'}\n{text}\n", encoding="utf-8")
    return Runtime.load(path, environ={}, cwd=tmp_path)


def test_rules_load_onto_the_runtime(tmp_path: Path) -> None:
    """Every key maps to its rule; `unlimited` and -1 are the unlimited count; a plain `keep`
    is `keep_last`; the timezone is the one buckets are read in."""
    rt = load(
        tmp_path,
        "timezone: Europe/Berlin\n"
        "policies:\n"
        "  gfs: {every: 1h, keep_last: 2, keep_hourly: 24, keep_daily: 7, keep_weekly: 4,\n"
        "        keep_monthly: unlimited, keep_yearly: -1, keep_within: 36h}\n"
        "  plain: {keep: 5}\n",
    )
    assert rt.retention["gfs"] == KeepRules(
        last=2, hourly=24, daily=7, weekly=4, monthly=UNLIMITED, yearly=UNLIMITED,
        within=timedelta(hours=36),
    )  # fmt: skip
    assert rt.rules("plain") == KeepRules(last=5)
    assert rt.rules("pre_restore") == KeepRules(last=10)
    assert rt.rules("manual") is None
    assert str(rt.timezone) == "Europe/Berlin"


def test_keep_and_rules_are_a_union(tmp_path: Path) -> None:
    """`keep` beside other rules (not keep_last) is their union with keep_last = keep."""
    rt = load(tmp_path, "policies: {d: {keep: 3, keep_monthly: 12}}")
    assert rt.rules("d") == KeepRules(last=3, monthly=12)


REFUSED = [
    ("policies: {d: {every: 1h}}", "policies.d.keep", "required: give keep (a count) or a rule"),
    ("policies: {d: {keep: 3, keep_last: 2}}", "policies.d.keep_last", "contradicts keep"),
    ("policies: {d: {keep_daily: -2}}", "policies.d.keep_daily", ">= -1"),
    ("policies: {d: {keep_weekly: lots}}", "policies.d.keep_weekly", "integer"),
    ("policies: {d: {keep_monthly: true}}", "policies.d.keep_monthly", "not true/false"),
    ("policies: {d: {keep_within: 0}}", "policies.d.keep_within", "greater than 0"),
    ("policies: {d: {keep_within: 1y}}", "policies.d.keep_within", "invalid duration"),
    ("policies: {d: {keep_within: 4000d}}", "policies.d.keep_within", "at most 3650d"),
    ("policies: {d: {keep: unlimited}}", "policies.d.keep", "integer"),
    ("policies: {d: {keep_dayly: 3}}", "policies.d.keep_dayly", "unknown key"),
    (
        "policies: {i: {mode: incremental, keep_daily: 7}}\noffsite: {url: 'file:///tmp/x'}",
        "offsite.keep.i",
        "GFS rules and no plain keep",
    ),
    (
        "policies: {d: {keep_daily: 7}}\noffsite: {url: 'file:///tmp/x'}",
        "offsite.keep.d",
        "GFS rules and no plain keep",
    ),
]


@pytest.mark.parametrize(("text", "key_path", "reason"), REFUSED)
def test_bad_retention_is_one_error_naming_the_key(
    tmp_path: Path, text: str, key_path: str, reason: str
) -> None:
    """Each bad or contradictory retention key is one ConfigError line: file, key, why."""
    path = tmp_path / "sidecar.yaml"
    path.write_text(text + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert (caught.value.source, caught.value.key_path) == (str(path), key_path)
    assert reason in caught.value.reason
    assert "\n" not in str(caught.value)


def test_an_incremental_policy_takes_every_rule(tmp_path: Path) -> None:
    """`mode: incremental` takes `keep`, `keep_last` (unlimited too) and every GFS rule, mapped
    onto the same rules as an archive policy's (before: all but a `keep_last` count refused)."""
    rt = load(
        tmp_path,
        "policies:\n"
        "  i: {mode: incremental, keep_last: 3}\n"
        "  j: {mode: incremental, keep: 2}\n"
        "  k: {mode: incremental, keep_last: unlimited}\n"
        "  g: {mode: incremental, keep: 2, keep_hourly: 24, keep_daily: 7, keep_weekly: 4,\n"
        "      keep_monthly: 12, keep_yearly: -1, keep_within: 36h}\n",
    )
    assert (rt.rules("i"), rt.rules("j")) == (KeepRules(last=3), KeepRules(last=2))
    assert rt.rules("k") == KeepRules(last=UNLIMITED)
    assert rt.rules("g") == KeepRules(
        last=2, hourly=24, daily=7, weekly=4, monthly=12, yearly=UNLIMITED,
        within=timedelta(hours=36),
    )  # fmt: skip
    assert set(rt.incremental) == {"i", "j", "k", "g"}


def test_offsite_keep_given_for_a_gfs_policy(tmp_path: Path) -> None:
    """With its own `offsite.keep`, a GFS-only policy loads and its offsite count is that."""
    rt = load(
        tmp_path,
        "policies: {d: {keep_daily: 7}}\noffsite: {url: 'file:///tmp/x', keep: {d: 4}}",
    )
    assert rt.require_offsite().keep["d"] == 4
    assert rt.rules("d") == KeepRules(daily=7)


def test_config_check_shows_the_rules(tmp_path: Path) -> None:
    """`config check` prints a GFS policy's rules as the file names them, a plain one its keep."""
    path = tmp_path / "sidecar.yaml"
    path.write_text(
        "policies:\n  d: {keep: 3, keep_daily: 7, keep_yearly: unlimited, keep_within: 36h}\n"
        "  p: {keep: 4}\n",
        encoding="utf-8",
    )
    result = run_cli("config", "check", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert (
        "policy d: keep_last 3, keep_daily 7, keep_yearly unlimited, keep_within 36h, not scheduled"
        in lines
    )
    assert "policy p: keep 4, not scheduled" in lines
