"""A ``file://`` store reached without ever following a link inside it.

The store's directory is shared ground like the backup directory (a NAS, a USB disk): anyone
who can write there can plant a symbolic link where an object, a checksum record or the lease
directory is expected, and a store that follows it reads or writes files elsewhere. obstore's
LocalStore follows links (and stops a whole listing at one symlink loop or non-UTF-8 name),
so a ``file://`` store uses this instead: every entry under the root is reached relative to
a descriptor of its parent directory with ``O_NOFOLLOW``, and checked once open. A link (or
anything but a regular file or directory) is refused with OffsiteUnsafeEntryError naming it;
a listing makes each such entry, and each name that is not UTF-8, a problem of its own and
goes on. The root itself is the operator's and followed like any configured path.

Same layout and semantics as LocalStore (objects written to a staging file ``KEY#N`` beside
them, renamed into place; ``create`` by link, never over an existing name; the same ETag
``"inode-mtime_us-size"``), so stores written by either read the same. Two ETags name the same
version when their modification time and size agree (``same_version``): the inode is left
out, so a store copied to another disk with its times (``cp -a``, ``rsync -a``: a NAS or USB
disk moved) still confirms; an object rewritten in place has a new modification time.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from backup_sidecar.errors import ObjectChangedError, OffsiteUnsafeEntryError, OffsiteUrlError
from backup_sidecar.offsite.meta import Meta

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_WRITE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1024 * 1024
_staging = itertools.count(secrets.randbelow(1 << 30))


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "is a symbolic link (never followed inside a file:// store)"
    if stat.S_ISDIR(mode):
        return "is a directory"
    return "is not a regular file"


def _printable(name: str) -> str:
    """A name as text even when it is not UTF-8 (its bytes escaped)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _etag(st: os.stat_result) -> str:
    return f'"{st.st_ino:x}-{st.st_mtime_ns // 1000:x}-{st.st_size:x}"'


def _version(etag: str) -> tuple[int, int] | None:
    """(mtime_us, size) of a ``file://`` ETag ``"inode-mtime_us-size"`` (quoted or not)."""
    parts = etag.strip('"').split("-")
    if len(parts) != 3:
        return None
    try:
        _, mtime_us, size = (int(p, 16) for p in parts)
    except ValueError:
        return None
    return mtime_us, size


def same_version(recorded: str, current: str) -> bool:
    """Whether ``current`` is the version of the file the ETag ``recorded`` was taken of: the
    same modification time and size, whatever the inode (a copy made with its times)."""
    if recorded == current:
        return True
    ours = _version(current)
    return ours is not None and ours == _version(recorded)


def _meta(key: str, st: os.stat_result) -> Meta:
    return Meta(
        key=key,
        size=st.st_size,
        modified=datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC),
        etag=_etag(st),
        local=True,
    )


class LocalFiles:
    """The objects of one ``file://`` root, keys ``/``-separated relative to it."""

    def __init__(self, root: Path, *, url: str) -> None:
        self.root = root
        self.url = url
        try:
            root.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise OffsiteUrlError(url, f"{root} exists and is not a directory") from None
        except OSError as exc:
            raise OffsiteUrlError(url, f"{root} cannot be created: {exc.strerror}") from None
        if not root.is_dir():
            raise OffsiteUrlError(url, f"{root} exists and is not a directory")

    def _unsafe(self, key: str, reason: str) -> OffsiteUnsafeEntryError:
        return OffsiteUnsafeEntryError(self.url, _printable(key), reason)

    def _split(self, key: str) -> list[str]:
        parts = key.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise self._unsafe(key, "is not a valid key")
        return parts

    @contextlib.contextmanager
    def _dir(self, parts: list[str], *, create: bool) -> Iterator[int | None]:
        """A descriptor of the directory ``parts`` (None if it is missing and not ``create``);
        OffsiteUnsafeEntryError naming the first component that is a link or not a directory."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for depth, part in enumerate(parts, 1):
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, dir_fd=fd)
                try:
                    child = os.open(part, _DIR, dir_fd=fd)
                except FileNotFoundError:
                    yield None
                    return
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    mode = os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode
                    raise self._unsafe("/".join(parts[:depth]), _kind(mode)) from None
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    def _open(self, key: str) -> tuple[int, os.stat_result] | None:
        """``key`` opened for reading (a regular file, never through a link), None if absent."""
        *parents, leaf = self._split(key)
        with self._dir(parents, create=False) as dfd:
            if dfd is None:
                return None
            try:
                fd = os.open(leaf, _READ, dir_fd=dfd)
            except FileNotFoundError:
                return None
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                raise self._unsafe(key, _kind(stat.S_IFLNK)) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise self._unsafe(key, _kind(st.st_mode))
        os.set_blocking(fd, True)
        return fd, st

    def head(self, key: str) -> Meta | None:
        opened = self._open(key)
        if opened is None:
            return None
        os.close(opened[0])
        return _meta(key, opened[1])

    def read_small(self, key: str, limit: int) -> bytes | None:
        opened = self._open(key)
        if opened is None:
            return None
        with os.fdopen(opened[0], "rb") as f:
            return f.read(limit + 1)

    def stream(self, key: str, *, etag: str | None) -> tuple[Meta, Iterator[memoryview]] | None:
        """``key``'s bytes in chunks (ObjectChangedError unless it is the version ``etag``, if
        given: ``same_version``)."""
        opened = self._open(key)
        if opened is None:
            return None
        fd, st = opened
        if etag is not None and not same_version(etag, _etag(st)):
            os.close(fd)
            raise ObjectChangedError(key)

        def chunks() -> Iterator[memoryview]:
            with os.fdopen(fd, "rb") as f:
                while chunk := f.read(_CHUNK):
                    yield memoryview(chunk)

        return _meta(key, st), chunks()

    def put(self, key: str, chunks: Iterable[bytes], *, create: bool = False) -> str | None:
        """Write ``key`` from ``chunks`` (a staging file renamed into place, or with ``create``
        linked only if the name is free); its ETag, None when ``create`` found it taken."""
        *parents, leaf = self._split(key)
        with self._dir(parents, create=True) as dfd:
            assert dfd is not None
            staging = f"{leaf}#{next(_staging)}"
            fd = os.open(staging, _WRITE, 0o666, dir_fd=dfd)
            try:
                with os.fdopen(fd, "wb", closefd=False) as f:
                    for chunk in chunks:
                        f.write(chunk)
                os.fsync(fd)
                st = os.fstat(fd)
                if create:
                    try:
                        os.link(staging, leaf, src_dir_fd=dfd, dst_dir_fd=dfd)
                    except FileExistsError:
                        return None
                else:
                    try:
                        os.rename(staging, leaf, src_dir_fd=dfd, dst_dir_fd=dfd)
                    except IsADirectoryError:
                        raise self._unsafe(key, "is a directory") from None
                return _etag(st)
            finally:
                os.close(fd)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(staging, dir_fd=dfd)

    def delete(self, key: str) -> None:
        """Remove ``key`` (a link planted there is removed itself, never its target)."""
        *parents, leaf = self._split(key)
        with self._dir(parents, create=False) as dfd:
            if dfd is None:
                return
            try:
                os.unlink(leaf, dir_fd=dfd)
            except FileNotFoundError:
                return
            except IsADirectoryError:
                raise self._unsafe(key, "is a directory") from None

    def scan(self, prefix: str) -> tuple[list[Meta], list[tuple[str, str]]]:
        """Every regular file under the directory ``prefix`` (recursive; staging files hidden),
        and (key, reason) for each entry that is a link, not a file or directory, or not UTF-8."""
        base = prefix.strip("/")
        metas: list[Meta] = []
        problems: list[tuple[str, str]] = []
        with self._dir(self._split(base) if base else [], create=False) as top:
            if top is None:
                return metas, problems
            todo: list[tuple[int, str]] = [(os.dup(top), base)]
            while todo:
                dfd, where = todo.pop()
                try:
                    self._scan_dir(dfd, where, metas, problems, todo)
                finally:
                    os.close(dfd)
        metas.sort(key=lambda m: m.key)
        return metas, problems

    def _scan_dir(
        self,
        dfd: int,
        where: str,
        metas: list[Meta],
        problems: list[tuple[str, str]],
        todo: list[tuple[int, str]],
    ) -> None:
        for name in sorted(os.listdir(dfd)):
            key = f"{where}/{name}" if where else name
            try:
                key.encode("utf-8")
            except UnicodeEncodeError:
                problems.append((_printable(key), "the name is not UTF-8"))
                continue
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                try:
                    todo.append((os.open(name, _DIR, dir_fd=dfd), key))
                except OSError as exc:
                    problems.append((key, f"unreadable: {exc.strerror}"))
            elif stat.S_ISREG(st.st_mode):
                if not _is_staging(name):
                    metas.append(_meta(key, st))
            else:
                problems.append((key, _kind(st.st_mode)))


def _is_staging(name: str) -> bool:
    head, sep, tail = name.rpartition("#")
    return bool(sep and head and tail.isdigit())
