"""Fixtures of the container suite: Dockerfile.sidecar read as instructions, and a volume tree
owned by the image's uid (tests/support/dockerfile.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.dockerfile import (
    DOCKERFILE,
    Instruction,
    VolumeTree,
    build_arg_default,
    parse_dockerfile,
)


@pytest.fixture
def dockerfile() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture
def volume_tree(dockerfile: list[Instruction]) -> Iterator[VolumeTree]:
    """/app/{arrow_data,user_data,backups} and /run/backup-sidecar under a fresh directory in
    /tmp (pytest's tmp_path is private to root), owned by the image's default UID/GID."""
    uid = int(build_arg_default(dockerfile, "UID"))
    gid = int(build_arg_default(dockerfile, "GID"))
    root = Path(tempfile.mkdtemp(prefix="sidecar-volumes-"))
    try:
        for sub in ("app/arrow_data", "app/user_data", "app/backups", "run/backup-sidecar"):
            (root / sub).mkdir(parents=True)
        for path in (root, *root.rglob("*")):
            os.chown(path, uid, gid)
        yield VolumeTree(root, uid, gid)
    finally:
        shutil.rmtree(root, ignore_errors=True)
