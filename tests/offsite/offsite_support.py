"""Helpers of the offsite tests (importable by test modules, unlike conftest)."""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Callable
from pathlib import Path

from seaweed_server import SeaweedServer

from backup_sidecar.offsite import RetryPolicy, Store, parse_target, resolve_credentials

_names = itertools.count()


def fast_retry(attempts: int = 3, sleep: Callable[[float], None] | None = None) -> RetryPolicy:
    """A policy whose waits are recorded, not slept (tests never wait for a backoff)."""
    return RetryPolicy(
        attempts=attempts,
        first_delay=0.01,
        max_delay=0.04,
        request_timeout=20.0,
        sleep=sleep or (lambda _s: None),
    )


def s3_store(server: SeaweedServer, bucket: str, prefix: str, **kwargs: object) -> Store:
    target = parse_target(
        f"s3://{bucket}/{prefix}", endpoint=server.endpoint, region="us-east-1", path_style=True
    )
    return Store(target, credentials=resolve_credentials(server.env()), **kwargs)  # type: ignore[arg-type]


def new_bucket(server: SeaweedServer) -> str:
    name = f"offsite-{os.getpid()}-{next(_names)}"
    server.create_bucket(name)
    return name


def archive_file(directory: Path, name: str, size: int, *, seed: int = 1) -> Path:
    """A local file of ``size`` pseudo-random bytes (incompressible, like a tar.gz)."""
    rng = random.Random(seed)
    path = directory / name
    with path.open("wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(rng.randbytes(n))
            left -= n
    return path
