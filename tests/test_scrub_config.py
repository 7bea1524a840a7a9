"""The `scrub:` configuration: a cron `schedule` or an `every` interval, validated like a
policy's, scheduled as the job `scrub`; the name `scrub` is reserved among policies."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from backup_sidecar.errors import ConfigError
from backup_sidecar.settings import ScrubConfig, load_settings

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "sidecar.yaml"


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "sidecar.yaml"
    path.write_text(text)
    return load_settings(path, environ={})


def test_scrub_is_off_by_default_and_scheduled_when_configured(tmp_path: Path) -> None:
    """No `scrub:` schedules nothing; the example's weekly cron and an `every` interval are
    scheduled as the job `scrub` next to the policies."""
    assert "scrub" not in load_settings(None, environ={}).scheduled_policies()
    example = load_settings(EXAMPLE, environ={})
    assert example.scrub == ScrubConfig(schedule="0 4 * * 0")
    assert example.scheduled_policies()["scrub"] == "0 4 * * 0"
    settings = load(tmp_path, "scrub: {every: 6h}\n")
    assert settings.scheduled_policies()["scrub"] == timedelta(hours=6)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "key_path", "reason"),
    [
        ("scrub: {schedule: '61 * * * *'}", "scrub.schedule", "minute"),
        ("scrub: {every: 500ms}", "scrub.every", "at least 1s"),
        ("scrub: {every: 1h, schedule: '0 4 * * 0'}", "scrub", "not both"),
        ("scrub: {keep: 3}", "scrub.keep", "unknown key"),
        ("policies: {scrub: {every: 1h, keep: 1}}", "policies.scrub", "reserved"),
    ],
)
def test_bad_scrub_settings_are_refused(
    tmp_path: Path, text: str, key_path: str, reason: str
) -> None:
    """A bad scrub setting is one ConfigError naming the key path and the reason."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text + "\n")
    assert caught.value.key_path == key_path
    assert reason in caught.value.reason
