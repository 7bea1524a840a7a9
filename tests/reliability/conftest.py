"""Fixtures of the fault-injection suite: small real filesystems, a short control socket
path, and a wall clock a daemon obeys (libfaketime). The daemons come from the `daemons`
fixture, the helpers from tests/support."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.clock import fake_clock_env, find_libfaketime
from support.files import mount_tmpfs, unmount


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Mount small tmpfs filesystems (``mount -t tmpfs -o size=...``); all unmounted at teardown.
    Skips the test, saying why, where mounting is not permitted."""
    mounted: list[Path] = []

    def mount(name: str, *, size: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        reason = mount_tmpfs(path, size=size)
        if reason is not None:
            pytest.skip(reason)
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        unmount(path)


@pytest.fixture
def sock_path(sock_dir: Path) -> Path:
    """A control socket path short enough for AF_UNIX, in a private directory."""
    return sock_dir / "control.sock"


@pytest.fixture(scope="module")
def libfaketime() -> Path:
    """libfaketime's preload library, installed with apt-get (as root) if it is missing."""
    found = find_libfaketime()
    if isinstance(found, str):
        pytest.skip(found)
    return found


@pytest.fixture
def fake_clock(tmp_path: Path, libfaketime: Path) -> tuple[Path, dict[str, str]]:
    """A clock file (offset "+0" to start) and the environment that makes a process obey it."""
    return fake_clock_env(tmp_path, libfaketime)
