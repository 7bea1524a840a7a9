"""Where the tests find the checkout, the shared ArrowTuner fixtures and the writer script."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "arrowtuner"
if not FIXTURES.is_dir():  # CI lays shared/ beside the clone; a developer checkout may differ
    FIXTURES = Path("/work/shared/fixtures/arrowtuner")
WRITER = ROOT / "tests" / "support" / "writer.py"
