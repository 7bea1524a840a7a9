"""How `ctl` prints an answer it has no table for."""

from __future__ import annotations

import pytest

from backup_sidecar.cli.ctl import _print


def test_a_map_of_names_prints_one_line_each_not_a_repr(capsys: pytest.CaptureFixture[str]) -> None:
    """A restore from offsite answers with which archive each database came from (a map of
    names): ctl prints a line per database, never a Python dict repr."""
    _print(False, {"databases": {"user": "hourly_1", "arrow": "daily_1"}, "not_found": []})
    out = capsys.readouterr().out
    assert "{" not in out and "'" not in out
    assert "databases:\n  user: hourly_1\n  arrow: daily_1\n" in out
