"""The seed's backup method, re-implemented from its documented behaviour (backup_manager.py).

Python's SQLite backup API copies each database into a temporary directory, a metadata JSON
file is written next to them, and ``tarfile`` in ``"w:gz"`` mode (zlib at its default level 9
for tarfile) packs the metadata first, then the databases. No integrity check, no checksums.

    python -m bench.seed_method OUT.tar.gz user=/path/user_data.db [arrow=/path/arrow.db]
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tarfile
import tempfile
from datetime import datetime
from pathlib import Path

FILES = {"arrow": "arrow_database.db", "user": "user_data.db"}


def _stats(path: Path) -> dict[str, object]:
    conn = sqlite3.connect(path)
    try:
        tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()
    finally:
        conn.close()
    return {"table_count": tables[0], "file_size_mb": round(path.stat().st_size / 2**20, 2)}


def create_backup(out: Path, sources: dict[str, Path]) -> None:
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        staged = {}
        for name, src_path in sources.items():
            dest = Path(tmp) / FILES[name]
            src = sqlite3.connect(src_path)
            dst = sqlite3.connect(dest)
            src.backup(dst)  # the default: every page in one step
            dst.close()
            src.close()
            staged[name] = dest
        metadata = {
            "backup_name": out.name.removesuffix(".tar.gz"),
            "created_at": datetime.now().isoformat(),
            "version": "1.0.0",
            "includes": {"arrow_database": "arrow" in staged, "user_database": "user" in staged},
        }
        for name, dest in staged.items():
            metadata[f"{name}_db_stats"] = _stats(dest)
        meta_path = Path(tmp) / "backup_metadata.json"
        meta_path.write_text(json.dumps(metadata, indent=2))
        with tarfile.open(out, "w:gz") as tar:
            tar.add(meta_path, arcname="backup_metadata.json")
            for name, dest in staged.items():
                tar.add(dest, arcname=FILES[name])


def main() -> None:
    out = Path(sys.argv[1])
    sources = dict(arg.split("=", 1) for arg in sys.argv[2:])
    create_backup(out, {k: Path(v) for k, v in sources.items()})


if __name__ == "__main__":
    main()
