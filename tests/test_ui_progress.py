"""The web page's progress box as the daemon's /progress answers it."""

from __future__ import annotations

from backup_sidecar.service.ui_app import ProgressBoard
from backup_sidecar.service.ui_pages import progress_box


def test_an_operation_just_started_shows_without_a_share() -> None:
    """A page action that has not reported a total yet ("starting", 0 of 0) is shown by its
    stage; it once divided by zero, failing every /progress poll while it started."""
    board = ProgressBoard()
    key = board.start("verify")
    assert "<div>verify: starting</div>" in progress_box(board.now())
    board.report(key, "extract", 512, 2048)
    assert "<div>verify: extract 25% (512 B of 2.0 KiB)</div>" in progress_box(board.now())
    board.finish(key)
    assert "<div>verify" not in progress_box(board.now())
