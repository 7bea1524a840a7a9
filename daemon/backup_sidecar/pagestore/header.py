"""The 100-byte SQLite database header, parsed into the fields a manifest records.

Offsets from the SQLite file format (https://sqlite.org/fileformat2.html#the_database_header).
The manifest keeps them so an operator (or a restore pre-check) sees page size, journal mode,
schema cookie and the rest of a backup without rebuilding its image.
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass, fields

MAGIC = b"SQLite format 3\x00"
HEADER_SIZE = 100


@dataclass(frozen=True)
class DbHeader:
    page_size: int
    write_version: int
    read_version: int
    reserved_bytes: int
    change_counter: int
    header_page_count: int
    freelist_trunk: int
    freelist_count: int
    schema_cookie: int
    schema_format: int
    default_cache_size: int
    autovacuum_top_root: int
    text_encoding: int
    user_version: int
    incremental_vacuum: int
    application_id: int
    version_valid_for: int
    sqlite_version_number: int

    @property
    def wal(self) -> bool:
        """Whether the file is in WAL mode (write and read versions 2)."""
        return self.write_version == 2 and self.read_version == 2

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: object) -> DbHeader:
        """The header from a manifest's ``header`` object; ValueError naming the bad key."""
        if not isinstance(raw, dict):
            raise ValueError("'header' is not an object")
        values: dict[str, int] = {}
        for f in fields(cls):
            v = raw.get(f.name)
            if type(v) is not int or not 0 <= v < 1 << 32:
                raise ValueError(f"'header.{f.name}' is not an integer in 0..2**32-1")
            values[f.name] = v
        return cls(**values)


def parse_header(page1: bytes) -> DbHeader:
    """The header at the start of page 1; ValueError if it is not an SQLite database's."""
    if len(page1) < HEADER_SIZE or not page1.startswith(MAGIC):
        raise ValueError("page 1 does not start with the SQLite header")
    (size,) = struct.unpack_from(">H", page1, 16)
    write_v, read_v, reserved = page1[18], page1[19], page1[20]
    ints = struct.unpack_from(">12I", page1, 24)
    tail = struct.unpack_from(">II", page1, 92)
    return DbHeader(
        page_size=65536 if size == 1 else size,
        write_version=write_v,
        read_version=read_v,
        reserved_bytes=reserved,
        change_counter=ints[0],
        header_page_count=ints[1],
        freelist_trunk=ints[2],
        freelist_count=ints[3],
        schema_cookie=ints[4],
        schema_format=ints[5],
        default_cache_size=ints[6],
        autovacuum_top_root=ints[7],
        text_encoding=ints[8],
        user_version=ints[9],
        incremental_vacuum=ints[10],
        application_id=ints[11],
        version_valid_for=tail[0],
        sqlite_version_number=tail[1],
    )
