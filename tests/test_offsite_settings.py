"""The `offsite` configuration section: validated like every other key, secrets refused."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from backup_sidecar.errors import ConfigError
from backup_sidecar.jobs import Runtime
from backup_sidecar.settings import load_settings, resolve_paths
from support.cli import one_error_line, run_cli

#: A valid age public key (the recipient of an identity nobody holds).
RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
SECRET = "wJalrXUtnFEMI-not-a-real-secret"  # noqa: S105 - a value that must never be echoed


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sidecar.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


REFUSED = [
    ("offsite: {url: 'http://x/y'}", "offsite.url", "s3:// or file://"),
    ("offsite: {url: 's3://Bad_Bucket/x'}", "offsite.url", "not a valid S3 bucket name"),
    ("offsite: {url: 'file://relative/x'}", "offsite.url", "local path"),
    ("offsite: {url: 's3://bucket/../x'}", "offsite.url", "'..'"),
    ("offsite: {endpoint: 'http://a:1'}", "offsite.url", "Field required"),
    ("offsite: {url: 's3://bucket/p', kep: {daily: 3}}", "offsite.kep", "unknown key"),
    ("offsite: {url: 's3://bucket/p', keep: {hourly: 3}}", "offsite.keep.hourly", "not a policy"),
    ("offsite: {url: 's3://bucket/p', keep: {daily: -1}}", "offsite.keep.daily", ">= 0"),
    ("offsite: {url: 's3://bucket/p', max_age: soon}", "offsite.max_age", "invalid duration"),
    ("offsite: {url: 's3://bucket/p', attempts: 0}", "offsite.attempts", ">= 1"),
    ("offsite: {url: 's3://bucket/p', lease_ttl: 500ms}", "offsite.lease_ttl", "at least 1s"),
    ("offsite: {url: 'file:///srv/x', endpoint: 'http://a:1'}", "offsite.endpoint", "s3://"),
    ("offsite: {url: 'file:///srv/x', path_style: true}", "offsite.path_style", "s3://"),
    ("offsite: {url: 's3://bucket/p', endpoint: 'ftp://a'}", "offsite.endpoint", "http://"),
    ("offsite: {url: 's3://bucket/p', endpoint: 'http://u:p@a'}", "offsite.endpoint", "AWS"),
    (
        "offsite: {url: 's3://bucket/p', encryption: {recipients: [age1nope]}}",
        "offsite.encryption.recipients",
        "recipient #1",
    ),
    (
        "offsite: {url: 's3://bucket/p', encryption: {recipients: []}}",
        "offsite.encryption.recipients",
        "at least one",
    ),
    (
        "offsite: {url: 's3://bucket/p', encryption: {identity_file: /k}}",
        "offsite.encryption.recipients",
        "Field required",
    ),
]


@pytest.mark.parametrize(("text", "key_path", "reason"), REFUSED)
def test_bad_offsite_values_are_one_error_naming_file_and_key(
    tmp_path: Path, text: str, key_path: str, reason: str
) -> None:
    """Each bad offsite value is one ConfigError line naming the file and the dotted key."""
    path = _write(tmp_path, text + "\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert (caught.value.source, caught.value.key_path) == (str(path), key_path)
    assert reason in caught.value.reason
    assert "\n" not in str(caught.value)


def test_a_file_url_naming_a_regular_file_is_one_error_naming_it(tmp_path: Path) -> None:
    """``offsite.url`` on a regular file: one ConfigError naming the key and the path (the
    store used to fail later with a bare ``File exists (os error 17)``)."""
    plain = tmp_path / "not-a-dir"
    plain.write_text("x")
    path = _write(tmp_path, f"offsite: {{url: 'file://{plain}'}}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert caught.value.key_path == "offsite.url"
    assert f"{plain} exists and is not a directory" in caught.value.reason


@pytest.mark.parametrize(
    "key",
    ["secret_access_key", "aws_access_key_id", "session_token", "credentials", "password"],
)
def test_a_secret_in_the_yaml_is_refused_without_echoing_it(tmp_path: Path, key: str) -> None:
    """A credential written into the offsite section is refused, pointing at the AWS variables;
    its value never appears in the error."""
    path = _write(tmp_path, f"offsite: {{url: 's3://bucket/p', {key}: {SECRET}}}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert caught.value.key_path == f"offsite.{key}"
    assert "AWS_ACCESS_KEY_ID" in caught.value.reason
    assert SECRET not in str(caught.value)


def test_an_age_identity_in_the_yaml_is_refused(tmp_path: Path) -> None:
    """The private age key goes in a file named by identity_file, never in the YAML."""
    path = _write(
        tmp_path,
        f"""
        offsite:
          url: s3://bucket/p
          encryption: {{recipients: [{RECIPIENT}], identity: AGE-SECRET-KEY-1{SECRET}}}
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert caught.value.key_path == "offsite.encryption.identity"
    assert SECRET not in str(caught.value)


def test_the_full_section_maps_onto_the_runtime(tmp_path: Path) -> None:
    """Every key is read; keep defaults to each policy's local keep; the identity file is
    taken relative to the working directory; no offsite section means no offsite."""
    path = _write(
        tmp_path,
        f"""
        policies:
          daily: {{schedule: "0 3 * * *", keep: 7}}
          hourly: {{every: 1h, keep: 24}}
        offsite:
          url: s3://bucket/site-a
          endpoint: http://minio:9000
          region: eu-west-1
          path_style: true
          keep: {{daily: 30}}
          max_age: 2d
          attempts: 2
          lease_ttl: 10m
          encryption:
            recipients: [{RECIPIENT}]
            identity_file: keys/age.txt
        """,
    )
    settings = load_settings(path, environ={})
    assert settings.offsite is not None
    assert settings.offsite.max_age == timedelta(days=2)
    target = settings.offsite.target
    assert (target.bucket, target.prefix, target.endpoint) == (
        "bucket",
        "site-a",
        "http://minio:9000",
    )
    assert (target.region, target.path_style) == ("eu-west-1", True)
    rt = Runtime.from_settings(settings, resolve_paths(settings, environ={}, cwd=tmp_path))
    spec = rt.require_offsite()
    assert dict(spec.keep) == {"daily": 30, "hourly": 24, "pre_restore": 10}
    assert spec.max_age == 2 * 86400
    assert spec.recipients == (RECIPIENT,)
    assert spec.identity_file == tmp_path / "keys/age.txt"
    assert (spec.attempts, spec.lease_ttl) == (2, 600.0)
    plain = load_settings(None, environ={})
    assert plain.offsite is None
    assert (
        Runtime.from_settings(plain, resolve_paths(plain, environ={}, cwd=tmp_path)).offsite is None
    )


def test_the_environment_sets_and_overrides_offsite_keys(tmp_path: Path) -> None:
    """SIDECAR_OFFSITE__* variables work like every other key, and a bad one is named."""
    path = _write(tmp_path, "offsite: {url: 's3://bucket/p'}\n")
    env = {"SIDECAR_OFFSITE__URL": "file:///srv/offsite", "SIDECAR_OFFSITE__MAX_AGE": "3h"}
    settings = load_settings(path, environ=env)
    assert settings.offsite is not None
    assert (settings.offsite.url, settings.offsite.max_age) == (
        "file:///srv/offsite",
        timedelta(hours=3),
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={"SIDECAR_OFFSITE__URL": "ftp://x"})
    assert caught.value.source == "environment SIDECAR_OFFSITE__URL"
    assert caught.value.key_path == "offsite.url"


def test_config_check_reports_the_offsite_section(tmp_path: Path) -> None:
    """`config check` names a bad offsite key in one line (exit 2) and shows a good section."""
    bad = _write(tmp_path, f"offsite: {{url: 's3://bucket/p', secret_key: {SECRET}}}\n")
    result = run_cli("config", "check", str(bad))
    assert result.returncode == 2
    line = one_error_line(result)
    assert f"{bad}: offsite.secret_key: secrets never go in the configuration" in line
    assert SECRET not in result.stderr + result.stdout
    good = _write(
        tmp_path, f"offsite: {{url: 's3://bucket/p', encryption: {{recipients: [{RECIPIENT}]}}}}\n"
    )
    result = run_cli("config", "check", str(good), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "offsite: s3://bucket/p (encrypted to 1 age recipient(s))" in result.stdout
