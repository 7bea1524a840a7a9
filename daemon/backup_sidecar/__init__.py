"""backup-sidecar: keeps SQLite databases safe (online backups, retention, verify, restore)."""

from backup_sidecar._version import __version__

__all__ = ["__version__"]
