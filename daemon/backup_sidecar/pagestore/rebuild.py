"""Reading backups back: list them, rebuild one's database image, export one as a tar.gz.

Every page taken from a pack is checked against the SHA-256 its pack's index records, and the
whole image against the manifest's SHA-256, before the result is published: a damaged or
missing pack is a PageMismatchError naming the backup and the page, a wrong image an
ImageMismatchError naming the backup, and in both cases no output file appears.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tarfile
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

from backup_sidecar.errors import (
    ImageMismatchError,
    ManifestFormatError,
    PackFormatError,
    PageBackupNotFoundError,
    PageMismatchError,
)
from backup_sidecar.pagestore import fsio, manifest
from backup_sidecar.pagestore.damage import mark_damaged
from backup_sidecar.pagestore.fsio import LOCK_TIMEOUT_S
from backup_sidecar.pagestore.manifest import Manifest, manifest_file, parse_manifest
from backup_sidecar.pagestore.packread import PackReader

#: Pieces of the image (a frame's pages at most each) written by one writev.
_WRITEV = 256


def load_manifest(dirs: fsio.StoreDirs, name: str) -> Manifest:
    file = manifest_file(name)
    try:
        data = fsio.read_file(
            dirs.manifests_fd, file, where=dirs.manifests / file, limit=manifest.MAX_BYTES
        )
    except FileNotFoundError:
        raise PageBackupNotFoundError(name) from None
    except OSError as exc:
        raise ManifestFormatError(name, f"cannot be read: {exc.strerror or exc}") from exc
    return parse_manifest(name, data)


def list_backups(
    store: Path, *, lock_timeout_s: float = LOCK_TIMEOUT_S
) -> list[Manifest | ManifestFormatError]:
    """Every backup in the store by name; an unreadable one is its error, not the list's."""
    out: list[Manifest | ManifestFormatError] = []
    with fsio.open_store(store, exclusive=False, timeout_s=lock_timeout_s) as dirs:
        for file in fsio.listdir(dirs.manifests_fd, manifest.SUFFIX):
            name = file.removesuffix(manifest.SUFFIX)
            try:
                out.append(load_manifest(dirs, name))
            except ManifestFormatError as exc:
                out.append(exc)
            except (PageBackupNotFoundError, ValueError):
                continue  # deleted meanwhile, or a stray file whose name is no backup's
    return out


class ImageStream:
    """The backup's image as a readable stream, every page and the whole image checked."""

    def __init__(self, dirs: fsio.StoreDirs, m: Manifest) -> None:
        self._m = m
        self._dirs = dirs
        self._packs = PackReader(dirs)
        self._pages = self._checked_pages()
        self._buf = b""

    def __enter__(self) -> ImageStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self._packs.close()

    def read(self, size: int = -1) -> bytes:
        """Exactly ``size`` bytes (all with -1) unless the image ends first (tarfile needs it)."""
        parts: list[bytes | memoryview] = [self._buf]
        have = len(self._buf)
        while size < 0 or have < size:
            page = next(self._pages, None)
            if page is None:
                break
            parts.append(page)
            have += len(page)
        data = b"".join(parts)
        if size < 0:
            self._buf = b""
            return data
        self._buf = data[size:]
        return data[:size]

    def chunks(self) -> Iterator[bytes | memoryview]:
        """The rest of the image, in pieces of up to a frame's pages (after ``read``'s)."""
        if self._buf:
            yield self._buf
            self._buf = b""
        yield from self._pages

    def _checked_pages(self) -> Iterator[memoryview]:
        """The image in pieces, run by run and frame by frame: each frame decoded once per
        stretch of slots, every page checked against its slot's SHA-256 as it goes."""
        image = hashlib.sha256()
        name, size = self._m.name, self._m.page_size
        sha256 = hashlib.sha256
        for run in self._m.runs:
            pack, pgno, slot, end = (
                run.pack,
                run.first_pgno,
                run.first_slot,
                run.first_slot + run.count,
            )
            while slot < end:
                try:
                    data, frame = self._packs.frame_at(pack, slot)
                    digests = self._packs.index(pack).digests
                except FileNotFoundError:
                    raise PageMismatchError(name, pgno, f"its pack {pack} is missing") from None
                except PackFormatError as exc:
                    mark_damaged(self._dirs, exc.pack, str(exc))
                    raise PageMismatchError(name, pgno, str(exc)) from exc
                except OSError as exc:
                    raise PageMismatchError(name, pgno, str(exc)) from exc
                if len(data) != frame.pages * size:
                    raise PageMismatchError(name, pgno, f"pack {pack} holds pages of another size")
                take = min(end, frame.first_slot + frame.pages) - slot
                at = (slot - frame.first_slot) * size
                piece = memoryview(data)[at : at + take * size]
                for i in range(take):
                    if sha256(piece[i * size : (i + 1) * size]).digest() != digests[slot + i]:
                        why = f"slot {slot + i} of pack {pack} is damaged"
                        mark_damaged(self._dirs, pack, f"page {pgno + i} of {name}: {why}")
                        raise PageMismatchError(name, pgno + i, why)
                image.update(piece)
                yield piece
                pgno += take
                slot += take
        if image.hexdigest() != self._m.image_sha256:
            raise ImageMismatchError(name, self._m.image_sha256, image.hexdigest())


@contextlib.contextmanager
def _output(out: Path) -> Iterator[tuple[int, int]]:
    """A temporary file beside ``out`` (dir fd, file fd), published as ``out`` (never over an
    existing file) if the block succeeds, removed otherwise."""
    dir_fd = os.open(out.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        tmp, fd = fsio.create_temp(dir_fd, where=out.parent)
        try:
            try:
                yield dir_fd, fd
                os.fsync(fd)
            finally:
                os.close(fd)
            fsio.publish(dir_fd, tmp, out.name, replace=False)
        finally:
            fsio.discard(dir_fd, tmp)
    finally:
        os.close(dir_fd)


def rebuild(
    store: Path, name: str, *, out: Path, lock_timeout_s: float = LOCK_TIMEOUT_S
) -> Manifest:
    """Write backup ``name``'s database image to the new file ``out``, checked throughout."""
    with fsio.open_store(store, exclusive=False, timeout_s=lock_timeout_s) as dirs:
        m = load_manifest(dirs, name)
        with _output(out) as (_, fd), ImageStream(dirs, m) as stream:
            batch: list[bytes | memoryview] = []
            for chunk in stream.chunks():
                batch.append(chunk)
                if len(batch) == _WRITEV:
                    _write_all(fd, batch)
                    batch = []
            _write_all(fd, batch)
        return m


def _write_all(fd: int, pieces: list[bytes | memoryview]) -> None:
    """Write ``pieces`` in order with as few system calls as the kernel allows."""
    views = [memoryview(p).cast("B") for p in pieces]
    while views:
        done = os.writev(fd, views)
        while views and done >= len(views[0]):
            done -= len(views[0])
            views.pop(0)
        if views and done:
            views[0] = views[0][done:]


def export(
    store: Path,
    name: str,
    *,
    out: Path,
    member: str,
    extra_members: Sequence[tuple[str, bytes]] = (),
    lock_timeout_s: float = LOCK_TIMEOUT_S,
) -> Manifest:
    """Write backup ``name`` as the new standalone ``out`` (.tar.gz) that plain ``tar -xzf``
    extracts: ``extra_members`` first (e.g. a metadata file), then the image as ``member``."""
    with fsio.open_store(store, exclusive=False, timeout_s=lock_timeout_s) as dirs:
        m = load_manifest(dirs, name)
        mtime = int(datetime.fromisoformat(m.created_at).timestamp())
        with (
            _output(out) as (_, fd),
            os.fdopen(os.dup(fd), "wb") as raw,
            tarfile.open(
                fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT, compresslevel=6
            ) as tar,
        ):
            for extra, data in extra_members:
                tar.addfile(_info(extra, len(data), mtime), io.BytesIO(data))
            with ImageStream(dirs, m) as stream:
                tar.addfile(_info(member, m.image_size, mtime), stream)
                if stream.read(1):
                    raise ImageMismatchError(name, m.image_sha256, "longer than recorded")
        return m


def _info(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, mtime
    return info
