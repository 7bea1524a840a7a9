"""Directories and filesystems for the tests: short socket paths, file-tree snapshots, small
real tmpfs mounts and how to fill them."""

from __future__ import annotations

import os
import subprocess
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path


def short_dir() -> Path:
    """A private directory with a short path (AF_UNIX socket paths must be < 108 bytes)."""
    return Path(tempfile.mkdtemp(prefix="bst-", dir="/tmp"))


def tree(root: Path, *, ignore: Callable[[str], bool] = lambda rel: False) -> dict[str, str]:
    """Every path under ``root`` -> kind, size and content digest of regular files (symlinks
    not followed): a before/after comparison shows anything created, removed or changed."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if ignore(rel):
                continue
            st = path.lstat()
            if path.is_symlink():
                out[rel] = f"link->{path.readlink()}"
            elif path.is_dir():
                out[rel] = "dir"
            elif path.is_file():
                out[rel] = f"file:{st.st_size}:{zlib.crc32(path.read_bytes()):08x}"
            else:
                out[rel] = f"special:{st.st_mode:o}"
    return out


def tree_diff(before: dict[str, str], after: dict[str, str]) -> dict[str, tuple[str | None, ...]]:
    keys = set(before) | set(after)
    return {k: (before.get(k), after.get(k)) for k in sorted(keys) if before.get(k) != after.get(k)}


def mount_tmpfs(path: Path, *, size: str) -> str | None:
    """Mount a tmpfs of ``size`` on the (existing) directory ``path``; None on success, else
    why it could not be mounted (no privilege)."""
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        return f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}"
    return None


def unmount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def fill(directory: Path, *, leave: int) -> int:
    """Fill ``directory``'s filesystem (a file ``filler`` in it) until about ``leave`` bytes
    are free (others may be writing to it at the same time); returns the bytes left free."""

    def free() -> int:
        st = os.statvfs(directory)
        return st.f_bavail * st.f_frsize

    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        size = os.fstat(fd).st_size
        want = free() - leave
        while want >= 4096:
            try:
                os.posix_fallocate(fd, size, want)
                size += want
            except OSError:  # someone else took space meanwhile: take less
                want //= 2
                continue
            want = free() - leave
    finally:
        os.close(fd)
    return free()
