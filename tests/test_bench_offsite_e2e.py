"""The end-to-end offsite benchmark (bench/offsite_e2e.py) still runs: its quick mode backs up
two small generated databases with the daemon's backup, uploads each archive with the daemon's
upload pass to a real SeaweedFS, plaintext and age, puts the same bytes with obstore alone,
and writes every issue-15 target with a ratio and a verdict. A refactor of the backup job, the
uploader or the Store that breaks the benchmark fails here, not on the day of a full run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OTHER = "# Offsite benchmark\n\n## Store operations alone (`bench.offsite`)\n\nkept\n"


@pytest.mark.slow
def test_quick_offsite_benchmark_reports_every_target(tmp_path: Path) -> None:
    """Every step ran (a pass that confirmed anything but one archive stops the bench with
    an error), both sizes have their table, and the four targets each have a ratio and a
    PASS or FAIL; the results file's other section (bench.offsite's) is kept."""
    out = tmp_path / "results.md"
    out.write_text(OTHER)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.offsite_e2e",
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
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# Offsite benchmark\n") and text.endswith(OTHER.split("\n", 1)[1])
    assert "### 2 MiB database" in text and "### 8 MiB database" in text
    for step in ("upload pass plaintext", "upload pass age", "obstore put alone"):
        assert re.search(rf"^\| {step} \| \d+\.\d\d \|", text, re.M), step
    verdicts = re.findall(r"\| (\d+\.\d\d)x \([<>]= [\d.]+\) \| (PASS|FAIL) \|$", text, re.M)
    assert len(verdicts) == 4, text
    assert not (tmp_path / "work").exists()  # the server's data and the archives are removed
