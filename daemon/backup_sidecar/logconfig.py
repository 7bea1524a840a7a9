"""Logging: structlog events (snake_case names, data as fields) as JSON lines or for a console.

Everything goes through one stdlib handler, so the sidecar's events and third-party stdlib
records (APScheduler's) come out in one format on one stream without interleaving. Third-party
records pass at WARNING and above (INFO with `verbose`); the sidecar's own at INFO (DEBUG).
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LogFormat = Literal["json", "console"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]

#: Marks the handler this module installs, so reconfiguring replaces it and nothing else.
_HANDLER_NAME = "backup_sidecar"
_FIRST_KEYS = ("timestamp", "level", "event")


def _first_keys(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Put timestamp, level and event first, for people reading the JSON lines."""
    ordered = {k: event_dict.pop(k) for k in _FIRST_KEYS if k in event_dict}
    ordered.update(event_dict)
    return ordered


class _Threshold(logging.Filter):
    """Let the sidecar's events through (structlog filters them), others from `level` up."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return isinstance(record.msg, dict) or record.levelno >= self.level


def _renderer(fmt: LogFormat, stream: TextIO) -> list[Processor]:
    if fmt == "json":
        return [
            structlog.processors.format_exc_info,
            _first_keys,
            structlog.processors.JSONRenderer(default=str),
        ]
    colors = bool(getattr(stream, "isatty", lambda: False)())
    return [structlog.dev.ConsoleRenderer(colors=colors)]


def configure_logging(
    *,
    fmt: LogFormat | None,
    verbose: bool,
    stream: TextIO | None = None,
    quiet: bool = False,
    level: LogLevel | None = None,
) -> None:
    """Route structlog and stdlib logging to `stream` (stderr): JSON unless a TTY or `console`.

    `quiet` (one-shot CLI commands, which print their own outcome and error line) keeps only
    critical events unless `verbose`. `level` (`$SIDECAR_LOG_LEVEL`) is the sidecar's own
    threshold instead of INFO (DEBUG with `verbose`); at `debug` third-party records pass from
    INFO, as with `verbose`.
    """
    ours = logging.DEBUG if verbose else logging.CRITICAL if quiet else logging.INFO
    if level is not None and not quiet:
        ours = logging.getLevelNamesMapping()[level.upper()]
        verbose = verbose or ours <= logging.DEBUG
    stream = stream if stream is not None else sys.stderr
    if fmt is None:
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(ours),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(_Threshold(logging.INFO if verbose else logging.WARNING))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                timestamper,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *_renderer(fmt, stream),
            ],
        )
    )
    root = logging.getLogger()
    _remove_our_handlers(root)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def reset_logging() -> None:
    """Undo `configure_logging` (tests): remove its handler, restore the library defaults."""
    root = logging.getLogger()
    _remove_our_handlers(root)
    root.setLevel(logging.WARNING)
    structlog.reset_defaults()


def _remove_our_handlers(root: logging.Logger) -> None:
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
