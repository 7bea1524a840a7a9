"""Every benchmark script still imports: a refactor that moves an archiver function must move
the benchmark's import with it (bench/phases.py once named two functions that no longer existed,
and nothing ran it until a benchmark run failed)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "__init__")


def test_there_are_benchmarks_to_check() -> None:
    """The list below is read from the directory, not left empty by a moved path."""
    assert "phases" in SCRIPTS and "run" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_script_imports(script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing the script resolves every name it takes from the package."""
    monkeypatch.syspath_prepend(str(BENCH.parent))  # `python -m bench.X` runs from the root
    module = importlib.import_module(f"bench.{script}")
    assert module.__name__ == f"bench.{script}"
