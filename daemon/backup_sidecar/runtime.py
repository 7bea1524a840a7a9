"""Map the validated settings to the plain fields the jobs take (the archiver never sees YAML)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from backup_sidecar.cpus import cpu_plan
from backup_sidecar.jobs import Runtime
from backup_sidecar.settings import ResolvedPaths, Settings, load_settings, resolve_paths


def runtime_from(settings: Settings, paths: ResolvedPaths) -> Runtime:
    plan = cpu_plan(settings.cpu_threads)
    return Runtime(
        backup_dir=paths.backup_dir,
        databases={spec.name: spec for spec in paths.databases},
        keep={name: policy.keep for name, policy in settings.policies.items()},
        policy_databases={
            name: tuple(policy.databases)
            for name, policy in settings.policies.items()
            if policy.databases
        },
        level=settings.compression_level,
        threads=plan.threads,
        pace=plan.pace,
        nice=settings.nice,
        lock_timeout=settings.lock_timeout.total_seconds(),
    )


def load_runtime(config: Path | None, *, environ: Mapping[str, str], cwd: Path) -> Runtime:
    settings = load_settings(config, environ=environ)
    return runtime_from(settings, resolve_paths(settings, environ=environ, cwd=cwd))
