"""The `notify` configuration section: validated like every other key, URLs never echoed."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from backup_sidecar.errors import ConfigError
from backup_sidecar.settings import load_settings
from backup_sidecar.settings.apprise_schemes import APPRISE_SCHEMES
from support.cli import clean_env, run_cli

SECRET = "tok-never-shown-4242"  # noqa: S105 - a value that must never be echoed


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sidecar.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


REFUSED = [
    ("notify: {url: 'json://a/b'}", "notify.url", "unknown key"),
    ("notify: {urls: ['json://a/b'], events: {backup_faild: false}}", "notify.events", "unknown"),
    (f"notify: {{urls: ['not a url {SECRET}']}}", "notify.urls.0", "scheme://"),
    (f"notify: {{urls: ['json://ok/x', 'nope{SECRET}']}}", "notify.urls.1", "value not shown"),
    (f"notify: {{heartbeat_url: 'ftp://h/{SECRET}'}}", "notify.heartbeat_url", "http://"),
    (f"notify: {{urls: ['json://ok/x', 'slak://{SECRET}@h/c']}}", "notify.urls.1", "no 'slak'"),
]


@pytest.mark.parametrize(("text", "key", "reason"), REFUSED)
def test_bad_notify_sections_are_refused_naming_the_key_without_the_url(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    """A typo or a malformed URL is one ConfigError naming the key; the URL, which may hold a
    token, is never part of the message."""
    with pytest.raises(ConfigError) as caught:
        load_settings(_write(tmp_path, text), environ={})
    message = str(caught.value)
    assert key in message, message
    assert reason in message, message
    assert SECRET not in message, message


def test_notify_urls_come_from_the_environment_and_never_print(tmp_path: Path) -> None:
    """`SIDECAR_NOTIFY__URLS` (a JSON list) and `SIDECAR_NOTIFY__HEARTBEAT_URL` set the
    section; the settings' repr (what a debug log would show) hides both."""
    url = f"ntfy://{SECRET}@ntfy.example/topic"
    settings = load_settings(
        _write(tmp_path, "notify: {events: {drill_failed: false}}"),
        environ={
            "SIDECAR_NOTIFY__URLS": json.dumps([url]),
            "SIDECAR_NOTIFY__HEARTBEAT_URL": f"https://hc-ping.com/{SECRET}",
        },
    )
    assert [u.get_secret_value() for u in settings.notify.urls] == [url]
    assert settings.notify.heartbeat_url is not None
    assert settings.notify.events.enabled("drill_failed") is False
    assert settings.notify.events.enabled("backup_failed") is True
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.model_dump())


def test_one_url_in_the_file_is_a_list_of_one(tmp_path: Path) -> None:
    """`urls: json://host/x` (a single string) is read as one URL, not refused."""
    settings = load_settings(_write(tmp_path, "notify: {urls: 'json://h/x'}"), environ={})
    assert [u.get_secret_value() for u in settings.notify.urls] == ["json://h/x"]


def test_config_check_names_the_schemes_never_the_urls(tmp_path: Path) -> None:
    """`config check` says notifications are on and which services, not the URLs' tokens."""
    config = _write(tmp_path, f"backup_dir: {tmp_path}\nnotify: {{events: {{drill_failed: no}}}}\n")
    env = clean_env(
        SIDECAR_NOTIFY__URLS=json.dumps([f"ntfy://{SECRET}@h/t", f"json://h/{SECRET}"]),
        SIDECAR_NOTIFY__HEARTBEAT_URL=f"https://hc-ping.com/{SECRET}",
    )
    done = run_cli("config", "check", str(config), env=env)
    assert done.returncode == 0, done.stderr
    assert "notify: 2 URL(s) (ntfy, json), heartbeat on, events off: drill_failed" in done.stdout
    assert SECRET not in done.stdout + done.stderr


def test_config_check_refuses_a_scheme_apprise_does_not_know(tmp_path: Path) -> None:
    """`config check` exits 2 with one line naming `notify.urls.1` and its unknown scheme, not
    the URL (before: accepted; every message to it failed at send time)."""
    config = _write(tmp_path, f"backup_dir: {tmp_path}\n")
    env = clean_env(
        SIDECAR_NOTIFY__URLS=json.dumps([f"ntfy://{SECRET}@h/t", f"slak://{SECRET}@h/c"])
    )
    done = run_cli("config", "check", str(config), env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert "notify.urls.1" in line and "apprise knows no 'slak' scheme" in line, line
    assert SECRET not in done.stdout + done.stderr


def test_the_known_schemes_are_those_of_the_installed_apprise() -> None:
    """settings/apprise_schemes.py is apprise's own set (it is copied so that loading the
    configuration does not import apprise). After an apprise upgrade, regenerate it from
    `sorted(apprise.manager_plugins.NotificationManager().schemas())`."""
    from apprise.manager_plugins import NotificationManager

    assert set(NotificationManager().schemas()) == APPRISE_SCHEMES  # type: ignore[no-untyped-call]
