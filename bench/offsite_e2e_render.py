"""Markdown of bench/offsite_e2e.py's samples: a table per database size, then the targets
(ratios within the run, at the largest size) with PASS or FAIL, then the raw samples."""

from __future__ import annotations

import json
import os
import statistics
from datetime import UTC, datetime
from typing import Any

MiB = 1024 * 1024
BEGIN, END = "<!-- bench.offsite_e2e: begin -->", "<!-- bench.offsite_e2e: end -->"
MODES = ("plaintext", "age")
AGE_TARGET, THROUGHPUT_TARGET, RSS_TARGET = 1.10, 0.8, 1.2
Rounds = list[dict[str, dict[str, Any]]]


def median(rounds: Rounds, label: str, key: str) -> float:
    return statistics.median(float(r[label][key]) for r in rounds)


def total(rounds: Rounds, mode: str) -> float:
    """Median over rounds of backup + upload pass seconds in ``mode``."""
    return statistics.median(
        r[f"backup {mode}"]["seconds"] + r[f"upload pass {mode}"]["seconds"] for r in rounds
    )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def size_table(size: int, rounds: Rounds) -> list[str]:
    archive = median(rounds, "obstore put alone", "bytes") / MiB
    lines = [
        f"### {size} MiB database ({archive:.0f} MiB archive)",
        "",
        "| step | seconds | Store.upload s | MiB/s | CPU s | peak RSS MiB | noise (cores) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label in rounds[0]:
        sec = median(rounds, label, "seconds")
        store = (
            f"{median(rounds, label, 'upload_seconds'):.2f}"
            if "upload_seconds" in rounds[0][label]
            else ""
        )
        rate = f"{archive / sec:.0f}" if not label.startswith("backup") else ""
        lines.append(
            f"| {label} | {sec:.2f} | {store} | {rate} | {median(rounds, label, 'cpu_s'):.2f} | "
            f"{median(rounds, label, 'maxrss_mib'):.0f} | {median(rounds, label, 'noise'):.2f} |"
        )
    for mode in MODES:
        lines.append(f"| backup + upload pass, {mode} | {total(rounds, mode):.2f} | | | | | |")
    return [*lines, ""]


def targets(samples: dict[int, Rounds]) -> list[str]:
    small, large = min(samples), max(samples)
    rounds = samples[large]
    age = total(rounds, "age") / total(rounds, "plaintext")
    thr = median(rounds, "obstore put alone", "seconds") / median(
        rounds, "upload pass plaintext", "seconds"
    )
    thr_store = median(rounds, "obstore put alone", "seconds") / median(
        rounds, "upload pass plaintext", "upload_seconds"
    )
    lines = [
        f"Targets (issue 15), ratios within this run at {large} MiB:",
        "",
        "| target | computed as | measured | verdict |",
        "|---|---|---:|---|",
        f"| age adds at most 10% to backup + upload | (backup + pass) age / plaintext, "
        f"medians of the rounds' sums | {age:.2f}x (<= {AGE_TARGET:.2f}) | "
        f"{verdict(age <= AGE_TARGET)} |",
        f"| upload throughput >= 0.8x obstore alone | obstore put seconds / upload pass "
        f"seconds (the whole pass), same archive | {thr:.2f}x (>= {THROUGHPUT_TARGET}) | "
        f"{verdict(thr >= THROUGHPUT_TARGET)} |",
    ]
    for mode in MODES:
        label = f"upload pass {mode}"
        ratio = median(samples[large], label, "maxrss_mib") / median(
            samples[small], label, "maxrss_mib"
        )
        lines.append(
            f"| peak RSS of the upload pass bounded, {mode} | peak RSS at {large} MiB / "
            f"at {small} MiB | {ratio:.2f}x (<= {RSS_TARGET}) | {verdict(ratio <= RSS_TARGET)} |"
        )
    cpu = median(rounds, "obstore put alone", "cpu_s") / median(
        rounds, "upload pass plaintext", "cpu_s"
    )
    lines += [
        "",
        f"Store.upload alone (without the pass's lease, listing and confirmation) against "
        f"obstore alone: {thr_store:.2f}x the throughput. CPU: obstore alone's CPU seconds / "
        f"the plaintext pass's: {cpu:.2f}x.",
        "",
    ]
    return lines


def render(samples: dict[int, Rounds], *, quick: bool, reps: int, load: tuple[float, float]) -> str:
    sizes = ",".join(str(s) for s in sorted(samples))
    command = "--quick" if quick else f"--sizes {sizes} --reps {reps}"
    lines = [
        "## Backup plus upload (`bench.offsite_e2e`)",
        "",
        f"`python -m bench.offsite_e2e {command}`, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} CPUs, load average (1 min) {load[0]:.2f} at the start and "
        f"{load[1]:.2f} at the end (the machine is shared with other work: the noise column "
        "is other processes' CPU during the step, in cores; SeaweedFS's own CPU is not "
        "counted as noise). Each mode runs in one process as the daemon runs it, with one "
        "read-check cache: `backup` is `jobs.run_backup` (the daemon's backup, niced as the "
        "daemon nices it, including its read-back of the new archive into the cache), then "
        "`upload pass` one `OffsiteUploader.sync` (lease, bucket listing, Store.upload, "
        "confirm) of that archive to SeaweedFS on loopback, sharing the cache; `obstore put "
        "alone` (a process of its own, right after the plaintext pass) puts the same "
        "plaintext archive with the same part size (8 MiB) and concurrency (4). Seconds and "
        "CPU s are the step alone (CPU s: the whole process's, all threads, over the step); "
        "peak RSS is the step's own for the backup and the pass (the high-water mark reset "
        "before each), the whole process's for obstore. "
        f"Medians of {reps} round(s); plaintext and age alternate which goes first.",
        "",
    ]
    for size in sorted(samples):
        lines += size_table(size, samples[size])
    lines += targets(samples)
    lines += ["Raw samples:", "", "```json", json.dumps(samples, indent=1), "```", ""]
    return "\n".join(lines)


def splice(existing: str, block: str) -> str:
    """``existing`` (RESULTS-offsite.md, bench.offsite's own results) with ``block`` (this
    benchmark's, between its markers) in place of the previous one, or under the title."""
    marked = f"{BEGIN}\n{block.strip()}\n{END}\n"
    if BEGIN in existing and END in existing:
        head, rest = existing.split(BEGIN, 1)
        return f"{head}{marked}\n{rest.split(END, 1)[1].lstrip(chr(10))}"
    return insert(existing, marked)


def insert(text: str, marked: str) -> str:
    """``marked`` under the ``# `` title line of ``text`` (first if it has none)."""
    if text.startswith("# "):
        title, _, rest = text.partition("\n")
        return f"{title}\n\n{marked}\n{rest.lstrip(chr(10))}"
    return marked + ("\n" + text if text else "")


def kept(existing: str) -> str:
    """This benchmark's block in ``existing`` with its markers (for bench.offsite to keep when
    it rewrites the file), or nothing."""
    if BEGIN in existing and END in existing:
        return BEGIN + existing.split(BEGIN, 1)[1].split(END, 1)[0] + END + "\n"
    return ""
