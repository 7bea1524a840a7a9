"""The seed's (``backup_manager.py``) names for the ArrowTuner databases, which every archive
format keeps: the member file of each database and the metadata flag that says it was asked for.
"""

from __future__ import annotations

#: The ArrowTuner databases and the member (file) names the seed's archives use for them.
KNOWN_DATABASE_FILES: dict[str, str] = {"arrow": "arrow_database.db", "user": "user_data.db"}

#: The seed's metadata flags, keyed by database name.
SEED_INCLUDE_KEYS: dict[str, str] = {"arrow": "arrow_database", "user": "user_database"}
