"""Page store helpers for tests: a backup at a fixed time, a checked rebuild, the pack files."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from backup_sidecar import pagestore
from support.databases import make_db

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def backup(db: Path, store: Path, name: str, *, parent: str | None = None) -> pagestore.Manifest:
    return pagestore.create_backup(db, store=store, name=name, now=NOW, parent=parent)


def rebuilt(store: Path, name: str, out_dir: Path) -> bytes:
    """Backup ``name`` rebuilt into a new file under ``out_dir``; its bytes (SHA checked)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{name}.rebuilt.db"
    out.unlink(missing_ok=True)
    m = pagestore.rebuild(store, name, out=out)
    data = out.read_bytes()
    out.unlink()
    assert hashlib.sha256(data).hexdigest() == m.image_sha256
    return data


def pack_files(store: Path) -> set[str]:
    return {p.name for p in (store / "packs").glob("*.pack")}


def load(store: Path, name: str) -> pagestore.Manifest:
    """The manifest of backup ``name`` in ``store``, as the store reads it."""
    found = [m for m in pagestore.list_backups(store) if isinstance(m, pagestore.Manifest)]
    return next(m for m in found if m.name == name)


def hot_chain(tmp_path: Path, store: Path, n: int) -> tuple[Path, dict[str, bytes]]:
    """A rollback-journal database (its file is the image) with a cold table that grows a
    little and a hot table rewritten whole before each of ``n`` chained backups."""
    db = make_db(tmp_path / "live.db", wal=False, rows=3000)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("CREATE TABLE hot (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        conn.executemany("INSERT INTO hot(v) VALUES (?)", [("x" * 300,)] * 400)
    conn.close()
    images: dict[str, bytes] = {}
    parent = None
    for i in range(n):
        conn = sqlite3.connect(db)
        with conn:
            conn.execute("UPDATE hot SET v = ? || substr(v, 4)", (f"{i:03d}",))
            conn.executemany(
                "INSERT INTO items(body) VALUES (?)", [(f"cold {i} {j}" * 8,) for j in range(12)]
            )
        conn.close()
        name = f"b{i:02d}"
        backup(db, store, name, parent=parent)
        images[name] = db.read_bytes()
        parent = name
    return db, images
