"""Fixtures of the page store tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Where the page store lives: inside a backup directory, created by the first backup."""
    return tmp_path / "backups" / "pages"
