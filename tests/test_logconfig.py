"""Logging setup: JSON lines for machines, a console format for people, one stream for both."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from backup_sidecar.logconfig import LogLevel, configure_logging, reset_logging


class TtyBuffer(io.StringIO):
    """An in-memory stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """A stream to log into; logging is reset afterwards so other tests see the defaults."""
    buffer = io.StringIO()
    yield buffer
    reset_logging()


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    """Every line of the stream parsed as one JSON object (fails on any other line)."""
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_event_level_timestamp_and_fields(stream: io.StringIO) -> None:
    """Each event is one JSON object per line: ISO UTC timestamp, level, event, bound fields."""
    configure_logging(fmt="json", verbose=False, stream=stream)
    log = structlog.get_logger("test").bind(database="arrow")
    log.info("backup_completed", archive="daily_20261125_030000", size_bytes=933888)
    log.warning("backup_dir_low_space", path=Path("/app/backups"))
    first, second = json_lines(stream)
    assert list(first)[:3] == ["timestamp", "level", "event"]
    assert first["event"] == "backup_completed"
    assert first["level"] == "info"
    assert (first["database"], first["size_bytes"]) == ("arrow", 933888)
    stamp = datetime.fromisoformat(first["timestamp"])
    assert stamp.utcoffset() == timedelta(0)
    assert second["path"] == "/app/backups"


def test_stdlib_warnings_join_the_same_stream(stream: io.StringIO) -> None:
    """APScheduler's stdlib records at WARNING+ come out as JSON too; its INFO chatter does not."""
    configure_logging(fmt="json", verbose=False, stream=stream)
    logger = logging.getLogger("apscheduler.scheduler")
    logger.info('Running job "daily"')
    logger.warning('Run time of job "%s" was missed by %s', "daily", "0:00:05")
    (line,) = json_lines(stream)
    assert line["event"] == 'Run time of job "daily" was missed by 0:00:05'
    assert (line["level"], line["logger"]) == ("warning", "apscheduler.scheduler")


def test_verbose_lets_debug_through(stream: io.StringIO) -> None:
    """Debug events appear only with --verbose (and then stdlib INFO too)."""
    configure_logging(fmt="json", verbose=False, stream=stream)
    structlog.get_logger().debug("detail_hidden")
    configure_logging(fmt="json", verbose=True, stream=stream)
    structlog.get_logger().debug("detail_shown", n=1)
    logging.getLogger("apscheduler").info("Scheduler started")
    assert [line["event"] for line in json_lines(stream)] == ["detail_shown", "Scheduler started"]


def test_exceptions_are_one_json_line(stream: io.StringIO) -> None:
    """log.exception keeps the line count at one: the traceback is a field."""
    configure_logging(fmt="json", verbose=False, stream=stream)
    try:
        raise RuntimeError("disk full")
    except RuntimeError:
        structlog.get_logger().exception("backup_failed", policy="daily")
    (line,) = json_lines(stream)
    assert line["event"] == "backup_failed"
    assert "RuntimeError: disk full" in line["exception"]


def test_format_follows_the_stream_when_not_given() -> None:
    """Without --log-format: console on a TTY, JSON otherwise (containers, pipes)."""
    plain, tty = io.StringIO(), TtyBuffer()
    try:
        configure_logging(fmt=None, verbose=False, stream=plain)
        structlog.get_logger().info("daemon_started", version="0.1.0")
        configure_logging(fmt=None, verbose=False, stream=tty)
        structlog.get_logger().info("daemon_started", version="0.1.0")
    finally:
        reset_logging()
    assert json_lines(plain)[0]["event"] == "daemon_started"
    console = tty.getvalue()
    assert "daemon_started" in console
    assert "version" in console
    with pytest.raises(json.JSONDecodeError):
        json.loads(console.splitlines()[0])


def test_reconfiguring_replaces_the_handler(stream: io.StringIO) -> None:
    """Configuring twice does not print every line twice (SIGHUP, tests)."""
    configure_logging(fmt="json", verbose=False, stream=stream)
    configure_logging(fmt="json", verbose=False, stream=stream)
    structlog.get_logger().info("once")
    assert len(json_lines(stream)) == 1


@pytest.mark.parametrize(
    ("level", "events"),
    [(None, ["seen_info", "seen_warning"]), ("warning", ["seen_warning"]),
     ("debug", ["seen_debug", "seen_info", "seen_warning"])],
)  # fmt: skip
def test_the_level_sets_the_sidecars_threshold(
    level: LogLevel | None, events: list[str], stream: io.StringIO
) -> None:
    """`level` ($SIDECAR_LOG_LEVEL) replaces the INFO threshold of the sidecar's events."""
    configure_logging(fmt="json", verbose=False, stream=stream, level=level)
    log = structlog.get_logger("test")
    log.debug("seen_debug")
    log.info("seen_info")
    log.warning("seen_warning")
    assert [line["event"] for line in json_lines(stream)] == events
