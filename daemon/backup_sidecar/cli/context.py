"""What every command gets from the group's options: the one place the CLI finds its
configuration (`--config`, else `$SIDECAR_CONFIG`, which click reads for that option)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backup_sidecar.jobs import Runtime
    from backup_sidecar.logconfig import LogFormat, LogLevel


@dataclass
class Context:
    """The group's options, plus what `ctl` adds for its subcommands."""

    #: The YAML configuration: `--config`, else `$SIDECAR_CONFIG` (None: defaults + environment).
    config: Path | None
    log_format: LogFormat | None
    verbose: bool
    #: `ctl --socket` (None: the configured control.socket).
    socket: Path | None = None
    #: `ctl --timeout`: seconds to wait for the daemon's answer (None: wait forever).
    timeout: float | None = None
    #: Whether the command's output is its result, not its log (logs critical events only).
    quiet: bool = True
    #: `--log-level` / `$SIDECAR_LOG_LEVEL` (None: info; debug with --verbose).
    log_level: LogLevel | None = None
    _runtime: Runtime | None = field(default=None, repr=False)
    _logging: bool = field(default=False, repr=False)

    def configure_logging(self) -> None:
        """Set up structlog (once). The group does it for every command but the ones that
        must start at once (`healthcheck`, `ctl ping`), which call it before any module that
        may log is imported: structlog is a tenth of a second to import."""
        if not self._logging:
            from backup_sidecar.logconfig import configure_logging  # noqa: PLC0415

            configure_logging(
                fmt=self.log_format, verbose=self.verbose, quiet=self.quiet, level=self.log_level
            )
            self._logging = True

    def runtime(self) -> Runtime:
        if self._runtime is None:
            from backup_sidecar.jobs import Runtime  # noqa: PLC0415 (keep --help fast)

            self._runtime = Runtime.load(self.config, environ=os.environ, cwd=Path.cwd())
        return self._runtime
