"""backup-sidecar: keeps SQLite databases safe (online backups, retention, verify, restore)."""

from importlib.metadata import version

#: The installed distribution's version (pyproject.toml), as ``--version`` and every archive's
#: ``tool_version`` report it.
__version__ = version("backup-sidecar")
