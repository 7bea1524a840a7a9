"""The archive's ``backup_metadata.json``: names, the metadata contract, parsing with validation.

Format 2 keeps every key of the seed's ``backup_manager.py`` (``arrow_db_stats`` and
``user_db_stats`` with ``file_size_mb``, ``table_count`` and ``tables``, the per-table row
counts the seed's UI adds up) and adds a ``databases`` section with checksums and SQLite facts.
Format 1 (the seed's own archives, no ``format_version``) has no ``databases``: it is read as a
legacy manifest, and the databases it holds are the members found in the archive (its
``includes`` flags say what was asked for, not what was stored).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

from backup_sidecar.archiver.membername import member_name_problem
from backup_sidecar.archiver.seedfiles import KNOWN_DATABASE_FILES, SEED_INCLUDE_KEYS
from backup_sidecar.errors import InvalidArchiveNameError, ManifestError

METADATA_MEMBER = "backup_metadata.json"
ARCHIVE_SUFFIX = ".tar.gz"
FORMAT_VERSION = 2
SEED_VERSION = "1.0.0"
#: The ``tool_version`` every archive records: the installed distribution's version, the one
#: ``backup-sidecar --version`` prints.
TOOL_VERSION = version("backup-sidecar")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_PAGE_SIZES = frozenset(1 << n for n in range(9, 17))
#: SQLite's largest page count (its max_page_count ceiling).
_MAX_PAGE_COUNT = 4294967294
#: The largest creation sequence an archive may carry (its widest JSON form sizes the room
#: left for the metadata). A backup a microsecond would take 285 years to reach it: an archive
#: claiming more is forged or corrupt, and is listed damaged rather than believed newest.
MAX_SEQUENCE = 2**53


def validate_name(name: str) -> str:
    if not NAME_RE.fullmatch(name) or name.endswith(ARCHIVE_SUFFIX):
        raise InvalidArchiveNameError(name)
    return name


def database_member_problem(name: str) -> str | None:
    """Why ``name`` cannot be a database's member, or None: the one check that the backup,
    the metadata parser and the configuration share."""
    if name == METADATA_MEMBER:
        return f"is the metadata member's name ({METADATA_MEMBER})"
    return member_name_problem(name)


def default_name(policy: str, now: datetime) -> str:
    """``<policy>_<YYYYmmdd_HHMMSS>`` in UTC, the seed's naming with the policy in front."""
    return f"{policy}_{now.astimezone(UTC):%Y%m%d_%H%M%S}"


@dataclass(frozen=True)
class DatabaseEntry:
    """What the archive promises about one database member."""

    file: str
    source_path: str
    size_bytes: int
    sha256: str
    page_size: int
    page_count: int
    journal_mode: str
    user_version: int
    schema_sha256: str
    table_count: int
    row_counts: dict[str, int]
    integrity_check: str
    sqlite_version: str
    #: How long the one-step snapshot held the source's read lock; absent from archives written
    #: before it was recorded.
    snapshot_seconds: float | None = None


@dataclass(frozen=True)
class Manifest:
    """A parsed ``backup_metadata.json``; ``databases`` is empty for the seed's legacy archives."""

    backup_name: str
    created_at: datetime
    policy: str
    databases: dict[str, DatabaseEntry]
    legacy: bool
    raw: Mapping[str, Any]
    #: The backup directory's creation sequence; absent from the seed's archives and from
    #: archives written before it was recorded.
    sequence: int | None = None
    #: Legacy archives: database name -> member file, as found in the archive (None until the
    #: archive's members were read; ``includes`` may name a database the seed did not store).
    held: Mapping[str, str] | None = None

    def members(self) -> dict[str, str]:
        """Database name -> member file name, for both formats."""
        if not self.legacy:
            return {name: entry.file for name, entry in self.databases.items()}
        if self.held is not None:
            return dict(self.held)
        return self.asked()

    def asked(self) -> dict[str, str]:
        """Legacy archives: the databases the ``includes`` flags name (not all may be held)."""
        includes = self.raw.get("includes", {})
        return {
            name: KNOWN_DATABASE_FILES[name]
            for name, key in SEED_INCLUDE_KEYS.items()
            if includes.get(key) is True
        }

    def holding(self, files: Collection[str]) -> Manifest:
        """This legacy manifest with the databases whose member files are ``files``."""
        held = {db: file for db, file in KNOWN_DATABASE_FILES.items() if file in files}
        return replace(self, held=held)


def build_metadata(
    *,
    name: str,
    created_at: datetime,
    policy: str,
    databases: Mapping[str, DatabaseEntry],
    duration_s: float,
    sequence: int | None = None,
) -> dict[str, Any]:
    """The metadata document: the seed's keys first, then the format-2 additions."""
    doc: dict[str, Any] = {
        "backup_name": name,
        "created_at": created_at.isoformat(),
        "version": SEED_VERSION,
        "format_version": FORMAT_VERSION,
        "tool_version": TOOL_VERSION,
        "policy": policy,
        "includes": {key: db in databases for db, key in SEED_INCLUDE_KEYS.items()},
    }
    for db, key in (("arrow", "arrow_db_stats"), ("user", "user_db_stats")):
        if db in databases:
            entry = databases[db]
            doc[key] = {  # the seed's _get_db_stats keys: its tools read them
                "file_size_mb": round(entry.size_bytes / (1024 * 1024), 2),
                "table_count": entry.table_count,
                "tables": dict(entry.row_counts),
            }
    doc["databases"] = {db: asdict(entry) for db, entry in databases.items()}
    doc["duration_seconds"] = round(duration_s, 3)
    if sequence is not None:
        doc["sequence"] = sequence
    return doc


def encode_metadata(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, indent=2, sort_keys=False).encode() + b"\n"


def parse_metadata(data: bytes) -> Manifest:
    """Parse and validate; any fault raises ManifestError naming the key."""
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except RecursionError:
        raise ManifestError(f"{METADATA_MEMBER} is nested too deeply") from None
    except ValueError as exc:  # not UTF-8, not JSON, or an integer past int's digit limit
        raise ManifestError(f"{METADATA_MEMBER} is not valid JSON: {_one_line(exc)}") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{METADATA_MEMBER} is not a JSON object")
    name = _field(doc, "backup_name", str)
    created = _parse_time(_field(doc, "created_at", str))
    sequence = _optional_sequence(doc)
    dbs_raw = doc.get("databases")
    if dbs_raw is None and "format_version" not in doc:
        # The seed's format: what it holds is read from the archive's members.
        _field(doc, "includes", dict)
        return Manifest(
            name, created, _policy(doc, name), {}, legacy=True, raw=doc, sequence=sequence
        )
    if not isinstance(dbs_raw, dict) or not dbs_raw:
        raise ManifestError("key 'databases': must be a non-empty object")
    entries = {str(db): _entry(db, value) for db, value in dbs_raw.items()}
    files = [e.file for e in entries.values()]
    if len(set(files)) != len(files):
        raise ManifestError("key 'databases': two databases share one member file")
    return Manifest(
        name, created, _policy(doc, name), entries, legacy=False, raw=doc, sequence=sequence
    )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _policy(doc: Mapping[str, Any], name: str) -> str:
    policy = doc.get("policy")
    if policy is None:
        return "manual"
    if not isinstance(policy, str) or not NAME_RE.fullmatch(policy):
        raise ManifestError("key 'policy': must be a policy name")
    return policy


def _entry(db: str, value: Any) -> DatabaseEntry:
    if not isinstance(value, dict):
        raise ManifestError(f"key 'databases.{db}': must be an object")
    prefix = f"databases.{db}"
    entry = DatabaseEntry(
        file=_field(value, "file", str, prefix),
        source_path=_field(value, "source_path", str, prefix),
        size_bytes=_field(value, "size_bytes", int, prefix),
        sha256=_field(value, "sha256", str, prefix),
        page_size=_field(value, "page_size", int, prefix),
        page_count=_field(value, "page_count", int, prefix),
        journal_mode=_field(value, "journal_mode", str, prefix),
        user_version=_field(value, "user_version", int, prefix),
        schema_sha256=_field(value, "schema_sha256", str, prefix),
        table_count=_field(value, "table_count", int, prefix),
        row_counts=_field(value, "row_counts", dict, prefix),
        integrity_check=_field(value, "integrity_check", str, prefix),
        sqlite_version=_field(value, "sqlite_version", str, prefix),
        snapshot_seconds=_optional_seconds(value, "snapshot_seconds", prefix),
    )
    if problem := database_member_problem(entry.file):
        shown = repr(entry.file) if len(entry.file) <= 64 else repr(entry.file[:61]) + "..."
        raise ManifestError(f"key '{prefix}.file': {shown} {problem}")
    if not _SHA256_RE.fullmatch(entry.sha256):
        raise ManifestError(f"key '{prefix}.sha256': not a hex SHA-256")
    if entry.page_size not in _PAGE_SIZES:
        raise ManifestError(f"key '{prefix}.page_size': not an SQLite page size")
    if not 0 <= entry.page_count <= _MAX_PAGE_COUNT:
        raise ManifestError(f"key '{prefix}.page_count': out of range")
    if entry.size_bytes < 0:
        raise ManifestError(f"key '{prefix}': negative size or page count")
    if not -(1 << 31) <= entry.user_version < 1 << 31:
        raise ManifestError(f"key '{prefix}.user_version': not a 32-bit integer")
    if not 0 <= entry.table_count < 1 << 31:
        raise ManifestError(f"key '{prefix}.table_count': out of range")
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in entry.row_counts.values()):
        raise ManifestError(f"key '{prefix}.row_counts': every count must be an integer")
    # A damaged pre-restore copy is archived as it was found, whatever its length.
    damaged = entry.integrity_check != "ok"
    if not damaged and entry.size_bytes != entry.page_size * entry.page_count:
        raise ManifestError(f"key '{prefix}.size_bytes': does not equal page_size * page_count")
    return entry


def _optional_sequence(doc: Mapping[str, Any]) -> int | None:
    if "sequence" not in doc:
        return None
    value = doc["sequence"]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_SEQUENCE:
        raise ManifestError(f"key 'sequence': expected an integer from 1 to {MAX_SEQUENCE}")
    return value


def _optional_seconds(doc: Mapping[str, Any], key: str, prefix: str) -> float | None:
    if key not in doc:
        return None
    value = doc[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e12:
        raise ManifestError(f"key '{prefix}.{key}': expected seconds (a number >= 0)")
    return float(value)


def _field(doc: Mapping[str, Any], key: str, kind: type, prefix: str = "") -> Any:
    where = f"{prefix}.{key}" if prefix else key
    if key not in doc:
        raise ManifestError(f"key '{where}': missing")
    value = doc[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ManifestError(f"key '{where}': expected {kind.__name__}, got {type(value).__name__}")
    return value


def _parse_time(text: str) -> datetime:
    """The time in UTC. Every archive time is compared, sorted, aged and shown in UTC, so one
    that UTC cannot hold (``0001-01-01T00:00+14:00`` is 31 December of year 0) is refused here
    rather than overflowing in whichever caller converts it first."""
    shown = text if len(text) <= 64 else text[:61] + "..."
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ManifestError(f"key 'created_at': {shown!r} is not an ISO 8601 time") from None
    if value.tzinfo is None:
        # The seed wrote naive local times; with no zone to go on, they are read as UTC.
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ManifestError(f"key 'created_at': {shown!r} is out of range in UTC") from None
