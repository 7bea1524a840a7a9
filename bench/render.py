"""RESULTS.md: the machine, every table of the run, and the issue's targets with pass/fail."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sqlite3
import statistics
import subprocess
from pathlib import Path
from typing import Any

from backup_sidecar.archiver import packing
from backup_sidecar.cpus import CpuPlan, cpu_plan, usable_cpus
from bench.report import (
    Target,
    idle_table,
    impact_table,
    med,
    method_table,
    target_table,
)
from bench.scaling import Idle

SIDECAR = "backup-sidecar backup"
VERIFY = "backup-sidecar verify"
FLOOR = "floor (snapshot + integrity_check)"
ROLLBACK = "rollback (DELETE)"
LIST_SIZE_LIMIT = 1.25
#: A writer blocked by the snapshot's lock retries through SQLite's busy handler, which sleeps
#: 100 ms between tries once it has waited about 0.3 s: a stall is the lock's hold time plus up
#: to this much.
BUSY_RETRY_S = 0.1


def _p99s(d: dict[str, Any], kind: str) -> list[float]:
    """The WAL writer's p99 in each run with ``kind`` alongside (several runs, taken in turn)."""
    return [i.p99_ms for i in d["impacts"] if (i.journal, i.kind) == ("wal", kind)]


def _overstays(d: dict[str, Any], kind: str) -> list[tuple[float, float]]:
    """(longest stall - snapshot step, snapshot step) in seconds, for each rollback-journal run
    with ``kind``: the stall the writer saw against the lock the same run's snapshot held."""
    runs = [i for i in d["impacts"] if (i.journal, i.kind) == (ROLLBACK, kind)]
    steps = [float(i.info.get("snapshot_s", 0.0)) for i in runs]
    return [(i.max_ms / 1e3 - step, step) for i, step in zip(runs, steps, strict=True)]


def _cmd(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    except OSError:
        return "not installed"
    return out.splitlines()[0].strip() if out else "?"


def _plan_text(plan: CpuPlan) -> str:
    if plan.threads == 1:
        return "the integrity check, then the compression, on one thread."
    slices = f"{packing.SLICE >> 10} KiB slices, {packing.PAUSE_S * 1e3:g} ms pauses"
    paced = f", the compression paced ({slices})" if plan.pace else ""
    return f"the integrity check and the compression at once on two threads{paced}."


def machine() -> list[str]:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return [
        f"- CPUs: {os.cpu_count()} x {cpu}; RAM {int(mem) / 2**20:.1f} GiB",
        f"- Kernel {platform.release()}; Python {platform.python_version()}; "
        f"SQLite (Python) {sqlite3.sqlite_version}; isal {importlib.metadata.version('isal')}",
        f"- {_cmd(['sqlite3', '--version'])[:40]} (CLI); {_cmd(['restic', 'version'])}; "
        f"{_cmd(['tar', '--version'])}; {_cmd(['gzip', '--version'])}",
        f"- backup-sidecar's default `cpu_threads: auto` here ({usable_cpus():g} usable CPUs): "
        + _plan_text(cpu_plan("auto")),
    ]


def targets(d: dict[str, Any]) -> list[Target]:
    g, s = d["groups"], d["small_groups"]
    t = []
    seed, side, floor = med(g["seed method"]), med(g[SIDECAR]), med(g[FLOOR])
    t.append(
        Target(
            "backup: seed method wall / backup-sidecar wall",
            f"{seed / side:.2f}x ({seed:.2f} s / {side:.2f} s)",
            ">= 5x",
            seed / side >= 5,
        )
    )
    t.append(
        Target(
            "backup: backup-sidecar wall / floor wall",
            f"{side / floor:.2f}x ({side:.2f} s / {floor:.2f} s)",
            "<= 1.3x",
            side / floor <= 1.3,
        )
    )
    sb = statistics.median(x.bytes for x in g[SIDECAR])
    eb = statistics.median(x.bytes for x in g["seed method"])
    t.append(
        Target(
            "archive bytes: backup-sidecar / seed method",
            f"{sb / eb:.3f}x ({sb:,.0f} / {eb:,.0f})",
            "<= 1.15x",
            sb / eb <= 1.15,
        )
    )
    ver = med(g[VERIFY])
    base = med(g["decompression alone (isal)"]) + med(g["integrity_check alone"])
    t.append(
        Target(
            "verify / (decompression alone (isal) + integrity_check alone)",
            f"{ver / base:.2f}x ({ver:.2f} s / {base:.2f} s)",
            "<= 1.3x",
            ver / base <= 1.3,
        )
    )
    rest = med(g["backup-sidecar restore --force (safe restore)"])
    t.append(
        Target(
            "safe restore / floor",
            f"{rest / floor:.2f}x ({rest:.2f} s / {floor:.2f} s)",
            "<= 3x",
            rest / floor <= 3,
        )
    )
    base = _p99s(d, "nothing (baseline)")
    during = _p99s(d, SIDECAR)
    errors = sum(i.errors for i in d["impacts"] if (i.journal, i.kind) == ("wal", SIDECAR))
    ratio = statistics.median(during) / statistics.median(base)
    t.append(
        Target(
            "WAL writer p99 during backup / p99 with no backup",
            f"{ratio:.2f}x (median of {len(during)} runs {statistics.median(during):.2f} ms / "
            f"median of {len(base)} {statistics.median(base):.2f} ms; runs "
            f"{', '.join(f'{x:.2f}' for x in during)} / {', '.join(f'{x:.2f}' for x in base)}), "
            f"{errors} errors",
            "<= 2x, 0 errors",
            ratio <= 2 and errors == 0,
        )
    )
    ours, floors = _overstays(d, SIDECAR), _overstays(d, FLOOR)
    failed = [
        i for i in d["impacts"] if (i.journal, i.kind) == (ROLLBACK, SIDECAR) and i.outcome != "ok"
    ]
    over = statistics.median([o for o, _ in ours])
    t.append(
        Target(
            "rollback: longest writer stall during backup, beyond that run's own snapshot step",
            f"{over * 1e3:+.0f} ms (median of {len(ours)} runs: "
            + ", ".join(f"{o * 1e3:+.0f} ms of {s:.3f} s" for o, s in ours)
            + "; the floor's bare snapshot: "
            + ", ".join(f"{o * 1e3:+.0f} ms of {s:.3f} s" for o, s in floors)
            + ")",
            f"<= {BUSY_RETRY_S * 1e3:.0f} ms (one busy-handler retry)",
            over <= BUSY_RETRY_S and not failed,
        )
    )
    for kind in (SIDECAR, VERIFY):
        big, small = med(g[kind], "maxrss_kib"), med(s[kind], "maxrss_kib")
        t.append(
            Target(
                f"peak RSS of {kind.split()[-1]}: {d['size_mib']:g} MiB / "
                f"{d['small_mib']:g} MiB database",
                f"{big / small:.2f}x ({big / 1024:.0f} / {small / 1024:.0f} MiB)",
                "<= 1.2x",
                big / small <= 1.2,
            )
        )
    big = [r for r in d["lists"] if r["count"] == 1000]
    small_a, large_a = sorted(big, key=lambda r: r["archive_bytes"])
    rmin = min(large_a["walls"]) / min(small_a["walls"])
    rmed = statistics.median(large_a["walls"]) / statistics.median(small_a["walls"])
    t.append(
        Target(
            "list of 1,000 archives: large / small archives (fastest run; median in brackets)",
            f"{rmin:.2f}x ({min(large_a['walls']):.2f} s at "
            f"{large_a['archive_bytes'] / 2**20:.0f} MiB each vs {min(small_a['walls']):.2f} s "
            f"at {small_a['archive_bytes'] / 2**20:.1f} MiB each; medians {rmed:.2f}x)",
            f"<= {LIST_SIZE_LIMIT}x (independent)",
            rmin <= LIST_SIZE_LIMIT,
        )
    )
    tiny = next(i for i in d["idles"] if i.label == "tiny")
    t.append(
        Target(
            "idle daemon, two policies (small databases)",
            f"{tiny.cpu_s_per_min:.3f} CPU-s/min",
            "< 0.5 CPU-s/min",
            tiny.cpu_s_per_min < 0.5,
        )
    )
    if tiny.healthchecks:
        t.append(idle_container_target(tiny))
    return t


def idle_container_target(tiny: Idle) -> Target:
    """The idle container: the daemon plus `backup-sidecar healthcheck` every 30 s."""
    per_check = tiny.healthcheck_cpu_s / tiny.healthchecks
    return Target(
        "idle container: daemon + HEALTHCHECK every 30 s (small databases)",
        f"{tiny.container_cpu_s_per_min:.3f} CPU-s/min (daemon {tiny.cpu_s:.2f} CPU-s + "
        f"{tiny.healthchecks} healthchecks {tiny.healthcheck_cpu_s:.2f} CPU-s, "
        f"{per_check:.3f} each, over {tiny.seconds:.0f} s)",
        "< 0.5 CPU-s/min",
        tiny.container_cpu_s_per_min < 0.5,
    )


def seed_note(d: dict[str, Any]) -> list[str]:
    """Why the 5x-the-seed target fails when the floor itself is not 5x below the seed."""
    g = d["groups"]
    seed, side, floor = med(g["seed method"]), med(g[SIDECAR]), med(g[FLOOR])
    if seed / side >= 5 or seed / floor >= 5:
        return []
    chk = med(g["integrity_check alone"])
    return [
        f"The 5x-the-seed target cannot be met on this database by any backup that runs "
        f"`integrity_check`: the floor alone (snapshot + integrity_check, {floor:.2f} s, of "
        f"which integrity_check {chk:.2f} s) is only {seed / floor:.2f}x faster than the seed "
        "method, which checks nothing; SQLite checks one database on one thread.",
        "",
    ]


def limits(d: dict[str, Any]) -> list[str]:
    """Ratios that bound the targets, and the same ratios in CPU seconds (less noise-bound)."""
    g = d["groups"]
    seed, side, floor = g["seed method"], g[SIDECAR], g[FLOOR]
    ver, dec, chk = g[VERIFY], g["decompression alone (isal)"], g["integrity_check alone"]
    rest = g["backup-sidecar restore --force (safe restore)"]
    return [
        "| ratio | by wall (medians) | by CPU seconds (medians) |",
        "|---|---|---|",
        f"| seed method / floor (the most any verified backup can gain) "
        f"| {med(seed) / med(floor):.2f}x | {med(seed, 'cpu_s') / med(floor, 'cpu_s'):.2f}x |",
        f"| seed method / backup-sidecar backup | {med(seed) / med(side):.2f}x "
        f"| {med(seed, 'cpu_s') / med(side, 'cpu_s'):.2f}x |",
        f"| backup-sidecar backup / floor | {med(side) / med(floor):.2f}x "
        f"| {med(side, 'cpu_s') / med(floor, 'cpu_s'):.2f}x |",
        f"| verify / (decompression + integrity_check) | "
        f"{med(ver) / (med(dec) + med(chk)):.2f}x "
        f"| {med(ver, 'cpu_s') / (med(dec, 'cpu_s') + med(chk, 'cpu_s')):.2f}x |",
        f"| safe restore / floor | {med(rest) / med(floor):.2f}x "
        f"| {med(rest, 'cpu_s') / med(floor, 'cpu_s'):.2f}x |",
    ]


def render(d: dict[str, Any]) -> str:
    g, s = d["groups"], d["small_groups"]
    ts = targets(d)
    passed = sum(x.ok for x in ts)
    lines = [
        "# Benchmark results",
        "",
        f"Run {d['started']} to {d['finished']} (UTC), `python -m bench.run"
        f"{' --quick' if d['size_mib'] < 1024 else ''}`: database {d['db_bytes']:,} bytes "
        f"({d['size_mib']:g} MiB target), {d['reps']} repetitions per method. "
        "How to read it: bench/README.md.",
        "",
        "## Machine",
        *machine(),
        "",
        '**Noise**: "other CPU, cores" (in the tables) is the CPU '
        "that processes outside the benchmark's own process tree used during each measurement "
        "(from /proc/stat), in cores (this machine has "
        f"{os.cpu_count()}). Wall times measured at high noise are pessimistic.",
        "",
        f"## Targets: {passed} of {len(ts)} met",
        *target_table(ts),
        "",
        *seed_note(d),
        "CPU seconds do not suffer from other processes' load the way wall time does (an "
        "overlapped backup uses two cores, so its CPU exceeds its wall on an idle machine); "
        "the same ratios by CPU:",
        "",
        *limits(d),
        "",
        "The rollback target's snapshot step is the one-step backup-API copy that read-locks the "
        "rollback-journal database, as long as it took in the same run: backup-sidecar records "
        "it in each archive's metadata (`snapshot_seconds`), the floor times its own. Its "
        "length swings between runs with the machine's page-cache state (with no writer, the "
        f"floor's took {', '.join(f'{x:.3f}' for x in d['rollback_snapshot_s'])} s), so each "
        "stall is judged against its own run's step. A writer blocked by the lock notices its "
        "release through SQLite's busy handler, which retries every 100 ms after the first "
        f"~0.3 s, so a stall can outlast the lock by up to {BUSY_RETRY_S * 1e3:.0f} ms; the "
        "limit allows that.",
        "",
        f"## Backup methods, {d['size_mib']:g} MiB database (WAL), warm",
        *method_table(g, d["db_bytes"]),
        "",
        'restic\'s "output bytes" are the `data_added` of its JSON summary (what the repository '
        "grew by, before packing); its repository on disk after both runs: "
        f"{max(x.info['repo_bytes'] for x in g['restic (after a day of writes)']):,} bytes.",
        "",
        f"## Scaling: backup-sidecar on the {d['small_mib']:g} MiB database",
        *method_table(s, d["small_bytes"]),
        "",
        f"## Writer impact ({d['size_mib']:g} MiB database, writer at 200 commits/s)",
        *impact_table(d["impacts"]),
        "",
        "The writer runs in the harness's session and every backup in a session of its own, so "
        "with Linux autogroup they are separate scheduling groups, as the application and the "
        "sidecar are in separate containers. Across groups the sidecar's niceness does not put "
        "its threads behind the application's; what keeps the writer's latency is a CPU left "
        "idle: the check and the compression one after the other (`cpu_threads: 1`), or at once "
        "with the compression paced while the check runs (the default on two CPUs). Unpaced "
        "overlap on two CPUs (measured outside this run, see README) made the writer wait for a "
        "CPU at nearly every commit: p99 about 10x.",
        "",
        "## list",
        "| archives | archive size | wall s (min / med / max) | peak RSS MiB | other CPU |",
        "|---|---|---|---|---|",
        *(
            f"| {r['count']} | {r['archive_bytes']:,} | "
            f"{min(r['walls']):.2f} / {statistics.median(r['walls']):.2f} / {max(r['walls']):.2f} "
            f"| {r['rss_kib'] / 1024:.0f} | {r['noise']:.2f} |"
            for r in d["lists"]
        ),
        "",
        "## Idle daemon (`daily` cron + `weekly`, health check every 60 s, metrics + socket on)",
        *idle_table(d["idles"]),
        "",
    ]
    return "\n".join(lines)
