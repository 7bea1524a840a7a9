"""Helpers of the offsite tests (importable by test modules, unlike conftest)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from backup_sidecar.offsite import RetryPolicy, Store, parse_target, resolve_credentials
from support.seaweed import SeaweedServer

_names = itertools.count()
MiB = 1024 * 1024
CHILD = Path(__file__).with_name("offsite_child.py")


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


class Sidecar:
    """A sidecar process (offsite_child.py) and the lines it prints."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.pid = process.pid
        self._heard = b""

    def says(self, timeout: float = 60) -> str:
        """Its next line (failing after ``timeout`` without one). Reads the pipe's descriptor
        itself: a buffered ``readline`` may take the next line too into its buffer, and a
        ``select`` on the then empty pipe would wait for a line already read."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._heard:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            assert ready, f"the sidecar said nothing in {timeout:g}s"
            data = os.read(fd, 4096)
            assert data, f"the sidecar exited (status {self.process.wait()}) saying nothing"
            self._heard += data
        line, _, self._heard = self._heard.partition(b"\n")
        return line.decode()

    def tell(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=30) == -signal.SIGKILL


@contextlib.contextmanager
def sidecar(
    store: Store, server: SeaweedServer | None, archive: Path, **spec: object
) -> Iterator[Sidecar]:
    """Start a sidecar process on ``store``'s prefix uploading ``archive``; killed at exit."""
    spec = {
        "url": store.target.url,
        "endpoint": store.target.endpoint,
        "archive": str(archive),
        "part_size": 5 * MiB,
        **spec,
    }
    env = {**os.environ, **(server.env() if server else {})}
    process = subprocess.Popen(
        [sys.executable, str(CHILD), json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        yield Sidecar(process)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()
