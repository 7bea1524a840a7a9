"""The incremental benchmark (bench/incremental.py, issue 16's rows) still runs: its quick mode
backs up a small generated database with the real CLI (`mode: incremental`), runs Litestream
and restic beside it on the same day of writes, restores the last backup of a chain and a full
archive, runs the daemon with a short interval under the bench writer, and writes every target
with a measured ratio and a verdict. A change to the CLI, the page store's layout, the daemon's
log events or the peers' invocation that breaks the benchmark fails here, not on the day of a
full run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BEFORE = "# Benchmark results\n\n## Machine\n- kept\n"
AFTER = "## Offsite elsewhere\n\nkept too\n"


@pytest.mark.slow
def test_quick_incremental_benchmark_reports_every_target(tmp_path: Path) -> None:
    """All eight rows have a measured value and PASS or FAIL; the day changed some pages and
    the sidecar and Litestream both stored bytes for it; the daemon ran backups in its window;
    the sections around the benchmark's own are kept; the work directory is removed."""
    out = tmp_path / "results.md"
    out.write_text(BEFORE + "\n## Incremental (issue 16)\n\nold rows\n\n" + AFTER)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.incremental",
            "--quick",
            "--work",
            str(tmp_path / "work"),
            "--out",
            str(out),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert text.startswith(BEFORE) and text.endswith(AFTER), text
    assert "old rows" not in text and text.count("## Incremental (issue 16)") == 1
    verdicts = re.findall(r"^\| .+ \| .+ \| .+ \| (PASS|\*\*FAIL\*\*) \|$", text, re.M)
    assert len(verdicts) == 8, text
    pages = re.search(r"([\d,]+) of ([\d,]+) pages changed", text)
    assert pages and 0 < int(pages[1].replace(",", "")) < int(pages[2].replace(",", ""))
    stored = re.search(
        r"sidecar incremental / compressed page-delta bound \| [\d.]+x \(([\d.]+) MB", text
    )
    lite = re.search(r"its L0 files for the day hold ([\d.]+) MB", text)
    assert stored and float(stored[1]) > 0 and lite and float(lite[1]) > 0, text
    backups = re.search(r"CPU-s in \d+ s, (\d+) backups\)", text)
    assert backups and int(backups[1]) >= 1, text
    assert not (tmp_path / "work").exists()
