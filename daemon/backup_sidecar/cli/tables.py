"""The text tables `list`/`ctl list` and `ctl status` print, from the JSON objects both the CLI
(`list --json`) and the control socket give: one rendering for both, with human sizes and ages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

_ARCHIVE_ROW = "{:<40} {:<19} {:>8} {:>10} {:<12} {:<9} {}"
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(size: int | None) -> str:
    """``933 B``, ``912.0 KiB``, ``1.4 GiB`` (binary units); ``-`` when unknown."""
    if size is None:
        return "-"
    value, unit = float(size), 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{size} B" if unit == 0 else f"{value:.1f} {_UNITS[unit]}"


def human_age(created_at: str, now: datetime) -> str:
    """How long ago ``created_at`` (ISO 8601) was: ``45s``, ``12m``, ``3h05m``, ``2d04h``;
    ``future`` for a date ahead of the clock, ``?`` for one that does not parse."""
    try:
        then = datetime.fromisoformat(created_at)
    except (TypeError, ValueError):
        return "?"
    seconds = int((now - (then if then.tzinfo else then.replace(tzinfo=UTC))).total_seconds())
    if seconds < 0:
        return "future"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 60:
        return f"{seconds}s"
    if minutes < 60:
        return f"{minutes}m"
    if hours < 24:
        return f"{hours}h{minutes % 60:02d}m"
    return f"{days}d{hours % 24:02d}h"


def _created(created_at: str) -> str:
    try:
        return datetime.fromisoformat(created_at).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        return str(created_at)


def archive_table(archives: Sequence[Mapping[str, Any]], *, now: datetime) -> list[str]:
    """The lines of the archive table (``list --json``'s objects, newest first)."""
    if not archives:
        return ["no archives"]
    head = ("NAME", "CREATED (UTC)", "AGE", "SIZE", "POLICY", "STATUS", "DATABASES")
    lines = [_ARCHIVE_ROW.format(*head)]
    for a in archives:
        extra = a.get("error") or ",".join(a.get("databases") or [])
        if a.get("kind", "archive") != "archive":  # e.g. "arrow,user (incremental, check quick)"
            extra += f" ({a['kind']}, check {a.get('check') or '?'})"
        if a.get("copy_of"):  # its metadata names another backup: a link, copy or rename
            extra += f" (copy of {a['copy_of']})"
        created = str(a.get("created_at", ""))
        size = human_size(a.get("size_bytes"))
        row = (a.get("name"), _created(created), human_age(created, now), size,
               a.get("policy"), a.get("status"), extra)  # fmt: skip
        lines.append(_ARCHIVE_ROW.format(*(str(v) for v in row)))
    return lines


def status_table(status: Mapping[str, Any]) -> list[str]:
    """The lines of `ctl status`: health, then each database's last check, then next runs."""
    reasons = "; ".join(status.get("reasons") or [])
    lines = [
        f"version     {status.get('version')}",
        f"healthy     {'yes' if status.get('healthy') else 'no: ' + reasons}",
    ]
    if status.get("unknown"):
        lines.append(f"unknown     {'; '.join(status['unknown'])}")
    lines += [f"backup_dir  {status.get('backup_dir')}", ""]
    row = "{:<12} {:<8} {:>10} {:>10} {:>9} {}"
    lines.append(row.format("DATABASE", "HEALTHY", "SIZE", "WAL", "FREELIST", "PATH / ERROR"))
    checks = status.get("checks") or {}
    for name, path in (status.get("databases") or {}).items():
        check = checks.get(name) or {}
        healthy = {True: "yes", False: "no", None: "?"}[check.get("healthy")]
        pages, free = check.get("page_count"), check.get("freelist_count")
        ratio = f"{free / pages:.0%}" if pages and free is not None else "-"
        where = f"{path}  {check['error']}" if check.get("error") else path
        lines.append(row.format(name, healthy, human_size(check.get("size_bytes")),
                                human_size(check.get("wal_size_bytes")), ratio, where))  # fmt: skip
    lines += ["", "{:<12} {}".format("POLICY", "NEXT RUN (UTC)")]
    for policy, when in (status.get("next_runs") or {}).items():
        lines.append("{:<12} {}".format(policy, _created(when) if when else "never"))
    return lines
