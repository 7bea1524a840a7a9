"""The offsite benchmark: upload and download throughput and peak RSS of an archive-sized file
(incompressible, like a tar.gz) through backup_sidecar.offsite.Store against a real SeaweedFS
on loopback, plaintext and age-encrypted, next to a plain local copy, obstore alone and boto3.

python -m bench.offsite [--size-mib 256] [--reps 3] [--rss-sizes 64,1024]
                        [--out bench/RESULTS-offsite.md]

Every operation runs as a process of its own (bench/proc.py: peak RSS of that process), the
repetitions interleaved (one of each operation per round); the table shows medians. The time
is the operation alone (bench/offsite_worker.py starts its clock after imports and setup).
``--rss-sizes``: the Store's uploads and downloads once more at each of these sizes, for
their peak RSS (bounded memory: it should not grow with the archive).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyrage import x25519

from bench.offsite_e2e_render import insert, kept
from bench.proc import run

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "work" / "offsite"
sys.path.insert(0, str(REPO / "tests"))
from support.seaweed import SeaweedServer  # noqa: E402 - the tests' server, started the same way

MiB = 1024 * 1024
# (label, worker op, extra spec): uploads first, so each round's downloads fetch its uploads
OPERATIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("local copy (shutil.copyfile)", "copy", {}),
    ("age encrypt to a local file", "age-local", {}),
    ("Store.upload plain", "store-put", {"key": "bench.tar.gz", "age": False}),
    ("Store.upload age", "store-put", {"key": "bench.tar.gz.age", "age": True}),
    ("Store.upload to file://", "store-put", {"key": "bench.tar.gz", "age": False, "file": True}),
    ("obstore put alone", "obstore-put", {"key": "raw/obstore.tar.gz"}),
    ("boto3 upload_file", "boto3-put", {"key": "raw/boto3.tar.gz"}),
    ("Store.download plain", "store-get", {"key": "bench.tar.gz", "age": False}),
    ("Store.download age", "store-get", {"key": "bench.tar.gz.age", "age": True}),
    (
        "Store.download from file://",
        "store-get",
        {"key": "bench.tar.gz", "age": False, "file": True},
    ),
    ("obstore get alone", "obstore-get", {"key": "raw/obstore.tar.gz"}),
    ("boto3 download_file", "boto3-get", {"key": "raw/boto3.tar.gz"}),
]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def make_archive(path: Path, size: int) -> None:
    rng = random.Random(1)
    with path.open("wb") as f:
        for _ in range(size // MiB):
            f.write(rng.randbytes(MiB))


def measure(op: str, spec: dict[str, Any], env: dict[str, str]) -> dict[str, float]:
    dest = Path(spec["dest"])
    dest.unlink(missing_ok=True)
    m = run([sys.executable, "-m", "bench.offsite_worker", op, json.dumps(spec)], env=env, cwd=REPO)
    if m.returncode != 0:
        raise SystemExit(f"{op} failed ({m.returncode}): {m.stderr[-2000:]}")
    if op.endswith("-get") and dest.stat().st_size != spec["size"]:
        raise SystemExit(f"{op}: got {dest.stat().st_size} bytes, expected {spec['size']}")
    dest.unlink(missing_ok=True)
    seconds = float(json.loads(m.stdout.strip().splitlines()[-1])["seconds"])
    return {"seconds": seconds, "maxrss_mib": m.maxrss_kib / 1024, "noise": m.noise_cores}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rss-sizes", default="64,1024", help="MiB, comma-separated ('' for none)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS-offsite.md")
    args = ap.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    server = SeaweedServer(WORK / "weed")
    log("starting SeaweedFS")
    server.start()
    try:
        samples = bench(server, args.size_mib, args.reps)
        sizes = [int(x) for x in args.rss_sizes.split(",") if x.strip()]
        rss = {size: rss_at(server, size) for size in sizes}
    finally:
        server.stop()
        shutil.rmtree(WORK, ignore_errors=True)
    existing = args.out.read_text() if args.out.exists() else ""
    # bench.offsite_e2e's section of the same file is kept, under the title
    args.out.write_text(insert(render(samples, rss, args.size_mib, args.reps), kept(existing)))
    log(f"wrote {args.out}")


def setup(server: SeaweedServer, size_mib: int) -> tuple[dict[str, Any], dict[str, str]]:
    """The archive of ``size_mib`` MiB, an age key pair, and the spec every operation shares."""
    source = WORK / "archive.tar.gz"
    make_archive(source, size_mib * MiB)
    identity = x25519.Identity.generate()
    identity_file = WORK / "bench.key"
    identity_file.write_text(f"{identity}\n")
    identity_file.chmod(0o600)
    base = {
        "src": str(source),
        "dest": str(WORK / "out"),
        "size": size_mib * MiB,
        "endpoint": server.endpoint,
        "bucket": "bench",
        "url": "s3://bench/store",
        "key": "",
        "recipient": str(identity.to_public()),
        "identity_file": str(identity_file),
        "file_url": f"file://{WORK / 'filestore'}",
    }
    return base, {**os.environ, **server.env()}


def bench(server: SeaweedServer, size_mib: int, reps: int) -> dict[str, list[dict[str, float]]]:
    server.create_bucket("bench")
    base, env = setup(server, size_mib)
    # untimed: SeaweedFS grows a new bucket's volumes on its first writes
    measure("obstore-put", {**base, "key": "raw/warm-up.tar.gz"}, env)
    samples: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in OPERATIONS}
    for rep in range(reps):
        for label, op, extra in OPERATIONS:
            sample = measure(op, {**base, **extra}, env)
            samples[label].append(sample)
            log(
                f"round {rep + 1}: {label}: {sample['seconds']:.2f} s, "
                f"{sample['maxrss_mib']:.0f} MiB peak"
            )
    return samples


def rss_at(server: SeaweedServer, size_mib: int) -> dict[str, float]:
    """Peak RSS (MiB) of the Store's s3 uploads and downloads of a ``size_mib`` archive."""
    base, env = setup(server, size_mib)
    peaks: dict[str, float] = {}
    for label, op, extra in OPERATIONS:
        if op.startswith("store-") and not extra.get("file"):
            peaks[label] = measure(op, {**base, **extra}, env)["maxrss_mib"]
            log(f"{size_mib} MiB: {label}: {peaks[label]:.0f} MiB peak")
    return peaks


def render(
    samples: dict[str, list[dict[str, float]]],
    rss: dict[int, dict[str, float]],
    size_mib: int,
    reps: int,
) -> str:
    med = {
        label: {k: statistics.median(s[k] for s in runs) for k in runs[0]}
        for label, runs in samples.items()
    }

    def ratio(a: str, b: str) -> str:
        return f"{med[a]['seconds'] / med[b]['seconds']:.2f}x"

    lines = [
        "# Offsite benchmark",
        "",
        "## Store operations alone (`bench.offsite`)",
        "",
        f"`python -m bench.offsite --size-mib {size_mib} --reps {reps}`, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs (shared with other "
        "work: the noise column is other processes' CPU meanwhile, in cores, SeaweedFS's own "
        "included). A "
        f"{size_mib} MiB incompressible file to and from SeaweedFS on loopback (`weed server`, "
        "SigV4), 8 MiB parts, 4 in flight. Medians of the rounds; time of the operation "
        "alone; peak RSS of its whole process (Python and the client included).",
        "",
        "| operation | seconds | MiB/s | peak RSS MiB | noise (cores) |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, m in med.items():
        lines.append(
            f"| {label} | {m['seconds']:.2f} | {size_mib / m['seconds']:.0f} | "
            f"{m['maxrss_mib']:.0f} | {m['noise']:.2f} |"
        )
    pairs = [
        (
            "Store.upload plain",
            "obstore put alone",
            "the Store's own work: hashing the stream, "
            "HEAD, the checksum record, the unfinished-upload checks",
        ),
        ("Store.upload age", "Store.upload plain", "what age adds to an upload"),
        ("Store.upload plain", "local copy (shutil.copyfile)", ""),
        ("obstore put alone", "boto3 upload_file", ""),
        ("Store.download plain", "obstore get alone", "hashing, the record, the temp file"),
        ("Store.download age", "Store.download plain", "what age adds to a download"),
        ("Store.download plain", "local copy (shutil.copyfile)", ""),
        ("obstore get alone", "boto3 download_file", ""),
    ]
    lines += ["", "Ratios (time over time; below 1 is faster):", ""]
    for a, b, why in pairs:
        lines.append(f"- {a} / {b}: {ratio(a, b)}" + (f" ({why})" if why else ""))
    lines += [
        "",
        *rss_table(rss),
        "Raw samples:",
        "",
        "```json",
        json.dumps(samples, indent=1),
        "```",
        "",
    ]
    return "\n".join(lines)


def rss_table(rss: dict[int, dict[str, float]]) -> list[str]:
    if not rss:
        return []
    sizes = sorted(rss)
    lines = [
        "Peak RSS (MiB) of the Store's operations by archive size (one run each):",
        "",
        "| operation | " + " | ".join(f"{s} MiB" for s in sizes) + " | largest / smallest |",
        "|---|" + "---:|" * (len(sizes) + 1),
    ]
    for label in rss[sizes[0]]:
        peaks = [rss[s][label] for s in sizes]
        cells = " | ".join(f"{p:.0f}" for p in peaks)
        lines.append(f"| {label} | {cells} | {peaks[-1] / peaks[0]:.2f}x |")
    return [*lines, ""]


if __name__ == "__main__":
    main()
