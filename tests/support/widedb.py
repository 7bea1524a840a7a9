"""Databases of many tables, built fast: the same file `CREATE TABLE` makes, without its cost.

SQLite rescans its whole schema at each `CREATE TABLE` (to load the new entry), so 14,000
tables take 15-25 s of CPU however they are batched. Here the first table is created by SQL;
the others get empty table-leaf root pages appended to the file and their `sqlite_master`
rows inserted under `writable_schema` (one B-tree insert each). The result is a valid database
(`integrity_check` ok) whose `.dump` and page count equal those of the `CREATE TABLE` build;
tests/archiver/test_limits.py checks that against the slow build on a few hundred tables.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

#: A table's columns, as the slow build and the fast one both declare them.
COLUMNS = "(id INTEGER PRIMARY KEY, v TEXT)"


def table_names(tables: int, name_length: int) -> list[str]:
    """``tables`` distinct names, each ``name_length`` characters long."""
    return [f"t{i:06d}_" + "m" * (name_length - 8) for i in range(tables)]


def _empty_leaf(page_size: int) -> bytes:
    """An empty table B-tree leaf page: type 13, no freeblock, no cell, content at the end."""
    content_start = page_size if page_size < 65536 else 0  # 0 stands for 65536
    header = bytes([0x0D, 0, 0, 0, 0]) + content_start.to_bytes(2, "big") + b"\x00"
    return header + bytes(page_size - len(header))


def many_tables(path: Path, *, tables: int, name_length: int, page_size: int = 1024) -> Path:
    """A rollback-journal database of ``tables`` tables named ``name_length`` long, one row in
    each tenth (as `CREATE TABLE` and `INSERT` would make it, in seconds)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = table_names(tables, name_length)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA page_size={page_size}")
    conn.execute(f'CREATE TABLE "{names[0]}" {COLUMNS}')
    conn.close()
    data = bytearray(path.read_bytes())
    first_root = len(data) // page_size + 1
    data += _empty_leaf(page_size) * (tables - 1)
    data[28:32] = (len(data) // page_size).to_bytes(4, "big")  # the header's page count
    path.write_bytes(bytes(data))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA writable_schema=ON")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO sqlite_master (type, name, tbl_name, rootpage, sql) "
        "VALUES ('table', ?, ?, ?, ?)",
        [
            (name, name, first_root + i, f'CREATE TABLE "{name}" {COLUMNS}')
            for i, name in enumerate(names[1:])
        ],
    )
    conn.execute("COMMIT")
    conn.close()
    conn = sqlite3.connect(path, isolation_level=None)  # the schema read afresh, once
    rows = "".join(f"INSERT INTO \"{n}\" (v) VALUES ('row of {n[:7]}');" for n in names[::10])
    conn.executescript(f"BEGIN;{rows}COMMIT;")
    conn.close()
    return path
