"""Incremental backups going offsite, for the tests: a configured runtime with an incremental
policy and an offsite section, its uploader in process, and what the store holds of pages."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from backup_sidecar import archiver, jobs
from backup_sidecar.offsite import Store, parse_target
from backup_sidecar.offsite.pagekeys import list_pages, parse_page_name
from backup_sidecar.service.live import Configured, LiveConfig
from backup_sidecar.service.metric_families import MetricFamilies
from backup_sidecar.service.offsite import OffsiteUploader
from backup_sidecar.settings import load_settings, resolve_paths
from support.offsite import fast_retry, s3_store
from support.seaweed import SeaweedServer

_sites = itertools.count()
#: (the offsite section without keys, the environment with its credentials, a Store there)
Place = tuple[dict[str, Any], dict[str, str], Store]


def offsite_place(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest | None = None
) -> Place:
    """A fresh offsite place of ``backend`` (``file``: a directory; ``s3``: a prefix in the
    session's SeaweedFS bucket)."""
    if backend == "file":
        url = f"file://{tmp_path / 'offsite'}"
        return {"url": url}, {}, Store(parse_target(url), retry=fast_retry())
    assert request is not None, "an s3 place needs the test's request (its fixtures)"
    server: SeaweedServer = request.getfixturevalue("seaweed")
    bucket: str = request.getfixturevalue("shared_bucket")
    prefix = f"pages-{next(_sites)}-{tmp_path.name}"
    section = {"url": f"s3://{bucket}/{prefix}", "endpoint": server.endpoint, "path_style": True}
    return section, server.env(), s3_store(server, bucket, prefix, retry=fast_retry())


@dataclass
class Site:
    """One sidecar's configuration and its in-process uploader."""

    config: Path
    configured: Configured
    uploader: OffsiteUploader
    registry: CollectorRegistry

    @property
    def rt(self) -> jobs.Runtime:
        return self.configured.runtime

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


def incremental_site(
    root: Path,
    dbs: dict[str, Path],
    *,
    offsite: dict[str, Any],
    environ: dict[str, str],
    keep: int = 5,
    offsite_keep: int | None = None,
    policy: dict[str, Any] | None = None,
) -> Site:
    """A configuration under ``root`` (backups in ``root/backups``): ``dbs``, the incremental
    policy ``hourly`` (``keep``, more keys in ``policy``), ``offsite`` (plus ``keep.hourly``
    when given)."""
    section = dict(offsite)
    if offsite_keep is not None:
        section["keep"] = {"hourly": offsite_keep}
    config = root / "sidecar.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "backup_dir": str(root / "backups"),
                "databases": {n: {"path": str(p)} for n, p in dbs.items()},
                "policies": {
                    "pre_restore": {"keep": 10},
                    "hourly": {
                        "every": "1h",
                        "keep": keep,
                        "mode": "incremental",
                        **(policy or {}),
                    },
                },
                "offsite": section,
            }
        )
    )
    (root / "backups").mkdir(parents=True, exist_ok=True)
    settings = load_settings(config, environ=environ)
    configured = Configured.of(settings, resolve_paths(settings, environ=environ, cwd=root))
    registry = CollectorRegistry()
    uploader = OffsiteUploader(
        live=LiveConfig(configured),
        families=MetricFamilies(registry, version="test", clock=lambda: datetime.now(UTC)),
        catalog=archiver.Catalog(root / "backups"),
        environ=environ,
    )
    return Site(config, configured, uploader, registry)


def page_objects(store: Store) -> dict[str, bool]:
    """Every object under ``pages/``: name -> confirmed."""
    return {o.name: o.confirmed for o in list_pages(store, encrypted_only=False).objects}


def confirmed_manifests(store: Store) -> set[str]:
    """``db/name`` of every confirmed manifest object."""
    out = set()
    for name, ok in page_objects(store).items():
        parsed = parse_page_name(name)
        if ok and parsed is not None and parsed.backup is not None:
            out.add(f"{parsed.db}/{parsed.backup}")
    return out


def confirmed_packs(store: Store) -> set[str]:
    """``db/pack`` of every confirmed pack object."""
    out = set()
    for name, ok in page_objects(store).items():
        parsed = parse_page_name(name)
        if ok and parsed is not None and parsed.pack is not None:
            out.add(f"{parsed.db}/{parsed.pack}")
    return out
