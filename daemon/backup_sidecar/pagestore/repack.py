"""Repacking mostly-dead packs: a pack stays while one kept backup needs one of its slots, so a
long chain keeps the dead pages of every pack it touched. A repack copies the live slots of the
packs whose live fraction is below a threshold into new packs, points the manifests that
name them at the copies, and deletes the old packs.

A slot is live when a manifest names it, or when it holds the base of a live delta slot
(transitively). A pack is repacked only when no pack that stays holds a live delta built on
one of its slots (pack indexes are immutable: their bases must stay where they are). A live
delta slot goes into the new pack as a delta on the same base when that base stays, else as
a whole page. Every page copied is checked against its slot's SHA-256 first: a mismatch marks
the pack damaged and stops the repack with nothing changed.

Manifests are named by their backup, not by their bytes, and are rewritten in place here (the
image, its SHA-256 and every recorded fact stay the same; only the runs move), each recording
the SHA-256 of the bytes it replaces (``replaces``). Offsite, a copy made from one of those
earlier bytes is still a confirmed copy of this backup (jobs/offsite_pages.offsite_state): it
names the old packs, which stay offsite while it does; nothing is uploaded again.

Crash safety, under the store's exclusive lock: the new packs are published (fsync, rename,
fsync of the directory) before any manifest changes; each manifest is replaced atomically (a
complete, fsynced file renamed over it), naming either the old packs or the new ones, both
present; the old packs are unlinked only after every manifest naming them was replaced. A
kill leaves unreferenced packs (new or old) that the next GC sweeps.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from backup_sidecar.errors import PackFormatError
from backup_sidecar.pagestore import fsio
from backup_sidecar.pagestore.briefs import Brief
from backup_sidecar.pagestore.damage import damaged_packs, mark_damaged
from backup_sidecar.pagestore.manifest import (
    MAX_BYTES,
    Manifest,
    Run,
    manifest_file,
    parse_manifest,
)
from backup_sidecar.pagestore.packformat import PACK_PAGES, PackIndex, pack_file, read_index
from backup_sidecar.pagestore.packread import PackReader
from backup_sidecar.pagestore.packwrite import PackWriter

#: Default: repack a pack when fewer than this fraction of its slots are live.
REPACK_BELOW = 0.5
#: The earlier versions of a manifest it remembers (``Manifest.replaces``).
MAX_REPLACES = 64

_Slot = tuple[str, int]


@dataclass(frozen=True)
class RepackReport:
    """What a repack did: old packs replaced, new packs written, manifests rewritten, the
    bytes of the old packs and of the new ones (reclaimed: the difference), and why it
    stopped if it did (``refused``: nothing changed)."""

    packs_repacked: tuple[str, ...] = ()
    packs_written: tuple[str, ...] = ()
    manifests_rewritten: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    refused: str | None = None
    #: The rewritten manifests in brief (the GC caches them: briefs.remember).
    briefs: tuple[Brief, ...] = ()

    @property
    def bytes_reclaimed(self) -> int:
        return self.bytes_before - self.bytes_after


class Liveness:
    """The slots the manifests name, gathered one manifest at a time (the GC's pass reads each
    once; none is kept in memory): pack -> one byte per slot, and which manifests name it."""

    def __init__(self) -> None:
        self.bits: dict[str, bytearray] = {}
        self.named_by: dict[str, set[str]] = {}
        #: The indexes the GC's mark read (the packs named and their bases).
        self.indexes: dict[str, PackIndex] = {}

    def add(self, m: Manifest) -> None:
        for r in m.runs:
            if r.first_slot + r.count > PACK_PAGES:
                continue  # no pack has such a slot: that backup is broken either way
            bits = self.bits.get(r.pack)
            if bits is None:
                bits = self.bits[r.pack] = bytearray(PACK_PAGES)
            bits[r.first_slot : r.first_slot + r.count] = b"\x01" * r.count
        for pack_id in m.packs:
            self.named_by.setdefault(pack_id, set()).add(m.name)


def repack(dirs: fsio.StoreDirs, named: Liveness, *, below: float) -> RepackReport:
    """Repack the packs of ``dirs`` whose live fraction is below ``below`` (the caller holds
    the exclusive lock, has swept unreferenced packs, and gathered ``named`` from every
    manifest)."""
    indexes = _indexes(dirs, named)
    if not any(_named_count(named, p) < below * len(i.digests) for p, i in indexes.items()):
        return RepackReport()  # a base only adds live slots: no pack can be a candidate
    live = _live(named, indexes)
    chosen = _candidates(live, indexes, below=below, damaged=damaged_packs(dirs))
    if not chosen:
        return RepackReport()
    reader = PackReader(dirs)
    try:
        moved, written, failure = _copy(dirs, reader, chosen, live, indexes)
    finally:
        reader.close()
    if failure is not None:
        return RepackReport(refused=failure)
    names = sorted({n for p in chosen for n in named.named_by.get(p, ())})
    briefs = []
    for name in names:
        file = manifest_file(name)
        old = fsio.read_file(dirs.manifests_fd, file, where=dirs.manifests / file, limit=MAX_BYTES)
        m = parse_manifest(name, old)
        earlier = (*m.replaces, hashlib.sha256(old).hexdigest())
        if len(earlier) > MAX_REPLACES:  # the first (most likely the one uploaded) and the last
            earlier = (earlier[0], *earlier[-(MAX_REPLACES - 1) :])
        new = replace(m, runs=_moved_runs(m.runs, moved), replaces=earlier)
        fsio.write_file(dirs.manifests_fd, file, new.to_bytes(), where=dirs.manifests, replace=True)
        briefs.append(Brief.of(new))
    before = 0
    for pack_id in sorted(chosen):
        before += os.stat(pack_file(pack_id), dir_fd=dirs.packs_fd, follow_symlinks=False).st_size
        os.unlink(pack_file(pack_id), dir_fd=dirs.packs_fd)
    os.fsync(dirs.packs_fd)
    after = sum(size for _, size in written)
    return RepackReport(
        tuple(sorted(chosen)), tuple(p for p, _ in written), len(names), before, after,
        briefs=tuple(briefs),
    )  # fmt: skip


def _named_count(named: Liveness, pack_id: str) -> int:
    bits = named.bits.get(pack_id)
    return 0 if bits is None else bits.count(1)


def _delta_slots(index: PackIndex) -> Iterator[tuple[int, tuple[str, int]]]:
    """(slot, base) of every delta slot (whole-page frames are skipped whole)."""
    for frame in index.frames:
        if frame.delta:
            for slot in range(frame.first_slot, frame.first_slot + frame.pages):
                base = index.slot_bases[slot]
                if base is not None:
                    yield slot, base


def _indexes(dirs: fsio.StoreDirs, named: Liveness) -> dict[str, PackIndex]:
    """The index of every pack the manifests name and, transitively, of their base packs
    (those the GC's mark read, plus any it did not)."""
    out: dict[str, PackIndex] = dict(named.indexes)
    todo = sorted(set(named.bits) - out.keys())
    while todo:
        pack_id = todo.pop()
        if pack_id in out:
            continue
        try:
            out[pack_id] = read_index(dirs.packs_fd, pack_id, where=dirs.packs)
        except FileNotFoundError:  # missing: its backups are broken either way (as gc.py)
            continue
        todo.extend(sorted(out[pack_id].bases - out.keys()))
    return out


def _live(named: Liveness, indexes: Mapping[str, PackIndex]) -> dict[str, bytearray]:
    """pack -> one byte per slot, 1 where a manifest names the slot or a live delta is built
    on it (transitively)."""
    live = {}
    for p, idx in indexes.items():
        bits = named.bits.get(p, bytearray(PACK_PAGES))
        live[p] = bits[: len(idx.digests)]
    todo = [(p, s, b) for p, idx in indexes.items() for s, b in _delta_slots(idx) if live[p][s]]
    while todo:
        _, _, base = todo.pop()
        if base[0] in live and not live[base[0]][base[1]]:
            live[base[0]][base[1]] = 1
            further = indexes[base[0]].slot_bases[base[1]]
            if further is not None:
                todo.append((base[0], base[1], further))
    return live


def _candidates(
    live: Mapping[str, bytearray],
    indexes: Mapping[str, PackIndex],
    *,
    below: float,
    damaged: frozenset[str],
) -> frozenset[str]:
    """The packs to repack: live fraction below ``below``, not marked damaged, and no pack
    that stays builds a live delta on one of their slots."""
    chosen = {
        p for p, bits in live.items() if p not in damaged and bits.count(1) < below * len(bits)
    }
    users: dict[str, set[str]] = {}
    for p, bits in live.items():
        for slot, base in _delta_slots(indexes[p]):
            if base[0] != p and bits[slot]:
                users.setdefault(base[0], set()).add(p)
    changed = True
    while changed:
        changed = False
        for p in sorted(chosen):
            if users.get(p, set()) - chosen:
                chosen.discard(p)
                changed = True
    return frozenset(chosen)


def _copy(
    dirs: fsio.StoreDirs,
    reader: PackReader,
    chosen: frozenset[str],
    live: Mapping[str, bytearray],
    indexes: Mapping[str, PackIndex],
) -> tuple[dict[_Slot, _Slot], list[tuple[str, int]], str | None]:
    """Copy the live slots of ``chosen`` into new packs (published): old slot -> new slot,
    the new packs and their sizes, or a failure (nothing published then)."""
    page_size = indexes[next(iter(chosen))].page_size
    writers: dict[bool, PackWriter] = {}
    done: list[PackWriter] = []
    moved: dict[_Slot, _Slot] = {}
    try:
        for pack_id in sorted(chosen):
            idx = indexes[pack_id]
            for slot, on in enumerate(live[pack_id]):
                if not on:
                    continue
                page, digest = _checked(dirs, reader, pack_id, slot)
                base = idx.slot_bases[slot]
                delta = base is not None and base[0] not in chosen
                writer = writers.get(delta)
                if writer is None or writer.full:
                    if writer is not None:
                        done.append(writer)
                    writer = writers[delta] = PackWriter(dirs, page_size=page_size)
                if base is not None and delta:
                    base_page = reader.page(*base)[0]
                    depth = reader.depth(*base) + 1
                    new = writer.add_delta(
                        page, digest, base=base, base_page=base_page, depth=depth
                    )
                else:
                    new = writer.add(page, digest)
                moved[(pack_id, slot)] = (writer.pack_id, new)
        done.extend(writers.values())
        writers.clear()
        return moved, [(w.pack_id, w.finish()) for w in done], None
    except (PackFormatError, OSError) as exc:
        for w in [*done, *writers.values()]:
            w.abort()
        return {}, [], str(exc)


def _checked(
    dirs: fsio.StoreDirs, reader: PackReader, pack_id: str, slot: int
) -> tuple[bytes, bytes]:
    """The page in ``slot`` and its SHA-256, checked; a pack found damaged (a frame that does
    not decode, a page that does not match) is marked so (damage.py) and raised."""
    try:
        page, digest = reader.page(pack_id, slot)
        if hashlib.sha256(page).digest() != digest:
            raise PackFormatError(pack_id, f"slot {slot} does not match its SHA-256")
    except PackFormatError as exc:
        mark_damaged(dirs, exc.pack, exc.reason)
        raise
    return page, digest


def _moved_runs(runs: Sequence[Run], moved: Mapping[_Slot, _Slot]) -> tuple[Run, ...]:
    """``runs`` with every moved slot at its new place, merged into as few runs as follow."""
    out: list[Run] = []

    def add(pgno: int, count: int, pack: str, slot: int) -> None:
        last = out[-1] if out else None
        if (
            last is not None
            and last.pack == pack
            and last.first_pgno + last.count == pgno
            and last.first_slot + last.count == slot
        ):
            out[-1] = Run(last.first_pgno, last.count + count, pack, last.first_slot)
        else:
            out.append(Run(pgno, count, pack, slot))

    for r in runs:
        if (r.pack, r.first_slot) not in moved:  # a moved pack's named slots all moved
            add(r.first_pgno, r.count, r.pack, r.first_slot)
            continue
        for i in range(r.count):
            pack, slot = moved[(r.pack, r.first_slot + i)]
            add(r.first_pgno + i, 1, pack, slot)
    return tuple(out)
