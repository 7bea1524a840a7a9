"""Fixtures of the daemon suite: a daemon YAML document builder and a large WAL database.
The daemons themselves come from the `daemons` fixture (tests/support/daemon.py)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from support.daemon import daemon_config as build_config
from support.databases import copy_of, make_big_db


@pytest.fixture
def daemon_config(backup_dir: Path, sock_dir: Path) -> Callable[..., dict[str, Any]]:
    """Build a daemon YAML document: loopback metrics on a free port, a socket in `sock_dir`;
    `databases` and `policies` given, any other section merged in."""
    return functools.partial(
        build_config, backup_dir=backup_dir, socket_path=sock_dir / "control.sock"
    )


@pytest.fixture(scope="session")
def big_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ~200 MB WAL database per session; tests take copies (`big_db`)."""
    return make_big_db(tmp_path_factory.mktemp("big") / "template.db", megabytes=200)


@pytest.fixture
def big_db(tmp_path: Path, big_db_template: Path) -> Path:
    """A private ~200 MB WAL database: its backup takes seconds."""
    return copy_of(big_db_template, tmp_path / "big" / "user_data.db")
