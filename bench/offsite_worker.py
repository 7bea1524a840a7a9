"""One measured offsite operation, in a process of its own (bench/offsite.py runs it through
bench/proc.py for the peak RSS): ``python -m bench.offsite_worker OP SPEC_JSON``.

It prints ``{"seconds": ..., "cpu_s": ...}``: the operation alone (its CPU seconds: the whole
process's, all threads, over the operation), after the imports and the client setup
(the lease for the Store's uploads is taken before the clock starts, as a running sidecar
holds it already). OPs: ``copy`` (a plain local copy), ``age-local`` (age-encrypt to a local
file), ``store-put`` / ``store-get`` (backup_sidecar.offsite.Store, plain or age),
``obstore-put`` / ``obstore-get`` (obstore alone, the same part size and concurrency),
``boto3-put`` / ``boto3-get`` (boto3's managed transfer, the same part size and concurrency).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PART = 8 * 1024 * 1024
CONCURRENCY = 4
AFTER: list[Callable[[], None]] = []  # run once the clock stopped


def boto3_client(spec: dict[str, Any]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=spec["endpoint"],
        region_name="us-east-1",
        config=Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"},
        ),
    )


def transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=CONCURRENCY
    )


def prepare(op: str, spec: dict[str, Any]) -> Callable[[], None]:
    """The operation, ready to run (clients built, lease taken)."""
    src, dest, key = Path(spec["src"]), Path(spec["dest"]), spec["key"]
    if op == "copy":
        return lambda: shutil.copyfile(src, dest)
    if op == "age-local":
        import pyrage
        from pyrage import x25519

        recipient = x25519.Recipient.from_str(spec["recipient"])

        def encrypt() -> None:
            with src.open("rb") as fin, dest.open("wb") as fout:
                pyrage.encrypt_io(fin, fout, [recipient])

        return encrypt
    if op in ("store-put", "store-get"):
        return prepare_store(op, spec, src, dest)
    if op in ("obstore-put", "obstore-get"):
        import obstore
        from obstore.store import S3Store

        s3 = S3Store(
            spec["bucket"],
            endpoint=spec["endpoint"],
            region="us-east-1",
            virtual_hosted_style_request=False,
            client_options={"allow_http": True},
        )
        if op == "obstore-put":

            def put() -> None:
                obstore.put(s3, key, src, chunk_size=PART, max_concurrency=CONCURRENCY)

            return put

        def get() -> None:
            with dest.open("wb") as out:
                for chunk in obstore.get(s3, key).stream(min_chunk_size=PART):
                    out.write(chunk)

        return get
    client, config = boto3_client(spec), transfer_config()
    if op == "boto3-put":
        return lambda: client.upload_file(str(src), spec["bucket"], key, Config=config)
    if op == "boto3-get":
        return lambda: client.download_file(spec["bucket"], key, str(dest), Config=config)
    raise SystemExit(f"unknown operation {op!r}")


def prepare_store(op: str, spec: dict[str, Any], src: Path, dest: Path) -> Callable[[], None]:
    from backup_sidecar.offsite import (
        Lease,
        Store,
        load_identities,
        parse_recipients,
        parse_target,
        resolve_credentials,
    )

    if spec.get("file"):
        target = parse_target(spec["file_url"])
    else:
        target = parse_target(spec["url"], endpoint=spec["endpoint"], path_style=True)
    store = Store(target, credentials=resolve_credentials(os.environ))
    if op == "store-get":
        identities = load_identities(Path(spec["identity_file"])) if spec["age"] else ()

        def download() -> None:
            store.download(spec["key"], dest, identities=identities)

        return download
    lease = Lease(store, ttl=600)
    if not lease.acquire().writable:
        raise SystemExit("the bench prefix is held by another sidecar")
    AFTER.append(lease.release)
    recipients = parse_recipients([spec["recipient"]]) if spec["age"] else ()

    def upload() -> None:
        store.upload(src, lease=lease, name=spec["key"], recipients=recipients)

    return upload


def main() -> None:
    op, spec = sys.argv[1], json.loads(sys.argv[2])
    run = prepare(op, spec)
    cpu, started = cpu_s(), time.monotonic()
    run()
    seconds, cpu = time.monotonic() - started, cpu_s() - cpu
    for after in AFTER:
        after()
    print(json.dumps({"seconds": seconds, "cpu_s": cpu}))


def cpu_s() -> float:
    """CPU seconds of this process so far, all its threads (obstore's included)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


if __name__ == "__main__":
    main()
