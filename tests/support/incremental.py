"""Incremental backups (the page store wired into policies) for the tests: a runtime whose
policy is incremental, and a backup rebuilt into a real file."""

from __future__ import annotations

from pathlib import Path

from backup_sidecar import jobs, pagestore
from backup_sidecar.archiver import DatabaseSpec
from backup_sidecar.jobs.pagestores import pages_root
from backup_sidecar.jobs.runtime import IncrementalSpec


def incremental_runtime(
    backup_dir: Path, dbs: dict[str, Path], *, policy: str = "hourly", keep: int = 3, **spec: object
) -> jobs.Runtime:
    """A runtime with ``dbs`` and one incremental ``policy`` (IncrementalSpec keywords)."""
    return jobs.Runtime(
        backup_dir=backup_dir,
        databases={n: DatabaseSpec(n, p) for n, p in dbs.items()},
        keep={policy: keep, "pre_restore": 10},
        incremental={policy: IncrementalSpec(**spec)},  # type: ignore[arg-type]
    )


def manifests(backup_dir: Path, db: str) -> list[str]:
    """The names of the backups in ``db``'s page store."""
    return sorted(p.stem for p in (pages_root(backup_dir) / db / "manifests").glob("*.json"))


def rebuild_to(backup_dir: Path, db: str, name: str, out: Path) -> pagestore.Manifest:
    """Backup ``name`` of ``db`` rebuilt (checked) into the new file ``out``."""
    return pagestore.rebuild(pages_root(backup_dir) / db, name, out=out)


def incremental_config(path: Path, backup_dir: Path, dbs: dict[str, Path], **policy: str) -> Path:
    """A YAML file: ``dbs``, and the policy `hourly` (every 1h, keep 3, incremental, plus
    ``policy`` keys given as YAML flow values)."""
    keys = {"every": "1h", "keep": "3", "mode": "incremental", **policy}
    databases = "".join(f"  {n}: {{path: '{p}'}}\n" for n, p in dbs.items())
    body = ", ".join(f"{k}: {v}" for k, v in keys.items())
    path.write_text(
        f"backup_dir: '{backup_dir}'\ndatabases:\n{databases}policies:\n  hourly: {{{body}}}\n"
    )
    return path
