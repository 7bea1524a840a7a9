"""The text tables' human sizes and ages (cli/tables.py), which `list` and `ctl list` share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backup_sidecar.cli.tables import archive_table, human_age, human_size

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("size", "text"),
    [(None, "-"), (0, "0 B"), (933, "933 B"), (1024, "1.0 KiB"), (933_888, "912.0 KiB"),
     (3 * 1024**3 // 2, "1.5 GiB")],
)  # fmt: skip
def test_human_size(size: int | None, text: str) -> None:
    """Binary units with one decimal; bytes exact; unknown is a dash."""
    assert human_size(size) == text


@pytest.mark.parametrize(
    ("ago", "text"),
    [(timedelta(seconds=45), "45s"), (timedelta(minutes=12), "12m"),
     (timedelta(hours=3, minutes=5), "3h05m"), (timedelta(days=2, hours=4), "2d04h"),
     (timedelta(minutes=-5), "future")],
)  # fmt: skip
def test_human_age(ago: timedelta, text: str) -> None:
    """Ages read at a glance; a date ahead of the clock (stepped back) says so."""
    assert human_age((NOW - ago).isoformat(), NOW) == text


def test_archive_table_survives_odd_entries() -> None:
    """A row with a bad date or missing fields still prints (the socket's bytes are untrusted)."""
    lines = archive_table(
        [{"name": "x", "created_at": "garbage", "size_bytes": None, "status": "damaged"}], now=NOW
    )
    assert lines[1].startswith("x ") and "garbage" in lines[1] and "damaged" in lines[1]
    assert archive_table([], now=NOW) == ["no archives"]
