"""The incremental keys of a policy (`mode`, `check`, `rebase`) are validated at load, one
line naming the file and the key, and reach the jobs' runtime."""

from __future__ import annotations

from pathlib import Path

import pytest

from backup_sidecar.errors import ConfigError
from backup_sidecar.jobs import Runtime
from backup_sidecar.jobs.runtime import IncrementalSpec
from backup_sidecar.settings import load_settings, resolve_paths

REFUSED = [
    ("{every: 1h, keep: 1, mode: incremental, rebase: {aftr: 1d}}", "rebase.aftr", "unknown key"),
    ("{every: 1h, keep: 1, mode: incremental, rebase: {}}", "rebase", "give after"),
    ("{every: 1h, keep: 1, mode: incremental, rebase: {after: soon}}", "rebase.after", "invalid"),
    ("{every: 1h, keep: 1, mode: incremental, rebase: {stored_fraction: 0}}",
     "rebase.stored_fraction", "must be > 0"),
    ("{every: 1h, keep: 1, mode: incremntal}", "mode", "'full' or 'incremental'"),
    ("{every: 1h, keep: 1, mode: incremental, check: deep}", "check", "'full' or 'quick'"),
    ("{every: 1h, keep: 1, check: quick}", "check", "needs mode: incremental"),
    ("{every: 1h, keep: 1, rebase: {after: 1d}}", "rebase", "needs mode: incremental"),
    ("{every: 1h, keep: 1, head_check: 1d}", "head_check", "needs mode: incremental"),
    ("{every: 1h, keep: 1, mode: incremental, head_check: 0s}", "head_check", "greater than 0"),
]  # fmt: skip


@pytest.mark.parametrize(("policy", "key", "reason"), REFUSED)
def test_bad_incremental_keys_are_refused_naming_the_key(
    tmp_path: Path, policy: str, key: str, reason: str
) -> None:
    """Each bad value is one ConfigError line with the dotted key path under the policy."""
    path = tmp_path / "sidecar.yaml"
    path.write_text(f"policies:\n  hourly: {policy}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert caught.value.key_path == f"policies.hourly.{key}"
    assert reason in caught.value.reason
    assert "\n" not in str(caught.value)


def test_pre_restore_cannot_be_incremental(tmp_path: Path) -> None:
    """pre_restore is written by restores as full archives: `mode: incremental` is refused."""
    path = tmp_path / "sidecar.yaml"
    path.write_text("policies:\n  pre_restore: {keep: 3, mode: incremental}\n")
    with pytest.raises(ConfigError, match=r"policies\.pre_restore"):
        load_settings(path, environ={})


def test_incremental_policies_reach_the_runtime(tmp_path: Path) -> None:
    """An incremental policy's check, rebase and head_check (default 1d) become the runtime's
    IncrementalSpec; a full policy has none (its backups stay archives)."""
    path = tmp_path / "sidecar.yaml"
    path.write_text(
        f"backup_dir: {tmp_path}\npolicies:\n"
        "  hourly: {every: 1h, keep: 24, mode: incremental, check: quick,"
        " rebase: {after: 1d, stored_fraction: 0.5}}\n"
        "  minutely: {every: 1m, keep: 60, mode: incremental, head_check: 6h}\n"
        "  daily: {schedule: '0 3 * * *', keep: 7}\n"
    )
    settings = load_settings(path, environ={})
    rt = Runtime.from_settings(settings, resolve_paths(settings, environ={}, cwd=tmp_path))
    assert rt.incremental == {
        "hourly": IncrementalSpec(check="quick", rebase_after=86400.0, rebase_fraction=0.5),
        "minutely": IncrementalSpec(check="full", head_check_s=6 * 3600.0),
    }
