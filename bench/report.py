"""Turn one run's measurements into bench/RESULTS.md: tables, machine, noise, targets."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bench.impact import Impact
from bench.methods import Sample
from bench.scaling import Idle


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    limit: str
    ok: bool


def med(samples: Sequence[Sample], attr: str = "wall_s") -> float:
    return statistics.median(getattr(s.m, attr) for s in samples)


def _mmm(values: Sequence[float], fmt: str) -> str:
    return " / ".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


def method_table(groups: dict[str, list[Sample]], db_bytes: int) -> list[str]:
    lines = [
        "| method | wall s (min / med / max) | CPU s (user+sys, med) | peak RSS MiB (med) "
        "| output bytes (med) | compression | other CPU, cores (med / max) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, samples in groups.items():
        walls = [s.m.wall_s for s in samples]
        sizes = [s.bytes for s in samples]
        size = statistics.median(sizes)
        ratio = f"{db_bytes / size:.2f}x" if size and "restic" not in name else ""
        noise = [s.m.noise_cores for s in samples]
        lines.append(
            f"| {name} | {_mmm(walls, '.2f')} | {med(samples, 'cpu_s'):.2f} "
            f"| {med(samples, 'maxrss_kib') / 1024:.0f} | {size:,.0f} | {ratio} "
            f"| {statistics.median(noise):.2f} / {max(noise):.2f} |"
        )
    return lines


def impact_table(impacts: Sequence[Impact]) -> list[str]:
    lines = [
        "| journal | running alongside | run | commits | errors | p50 ms | p99 ms | max ms "
        "| window s | outcome | other CPU, cores |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i in impacts:
        lines.append(
            f"| {i.journal} | {i.kind} | {i.run} | {i.commits} | {i.errors} | {i.p50_ms:.2f} "
            f"| {i.p99_ms:.2f} | {i.max_ms:.1f} | {i.backup_wall_s:.2f} "
            f"| {i.outcome} | {i.noise_cores:.2f} |"
        )
    return lines


def idle_table(idles: Sequence[Idle]) -> list[str]:
    lines = [
        "| databases | measured s | startup CPU s | idle CPU s | CPU s/min | RSS max MiB "
        "| RSS end MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for i in idles:
        lines.append(
            f"| {i.label} ({i.db_bytes / 2**20:.0f} MiB user db) | {i.seconds:.0f} "
            f"| {i.startup_cpu_s:.2f} | {i.cpu_s:.2f} | {i.cpu_s_per_min:.3f} "
            f"| {i.rss_kib_max / 1024:.0f} | {i.rss_kib_end / 1024:.0f} |"
        )
    return lines


def target_table(targets: Sequence[Target]) -> list[str]:
    lines = ["| target | measured | limit | result |", "|---|---|---|---|"]
    for t in targets:
        verdict = "PASS" if t.ok else "**FAIL**"
        lines.append(f"| {t.name} | {t.measured} | {t.limit} | {verdict} |")
    return lines
