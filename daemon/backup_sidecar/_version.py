"""The version, the one place it is written: pyproject.toml reads it (hatch's version source),
and `--version` prints it without importing importlib.metadata (a third of click's import)."""

__version__ = "0.1.0"
