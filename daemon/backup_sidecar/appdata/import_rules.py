"""When an arrow import may run: outside production, or in production with the force flag.

Production is ``FLASK_ENV`` or ``APP_ENV`` set to ``production``. ``FORCE_DATABASE_IMPORT``
accepts ``true``/``false`` and also ``1``/``yes``/``on`` and ``0``/``no``/``off`` (any case,
blank meaning unset); any other value (``ture``) is refused with a :class:`ConfigError` rather
than silently meaning false. ``init`` and ``import-arrows`` both apply these rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from backup_sidecar.errors import ConfigError

PRODUCTION_VARS = ("FLASK_ENV", "APP_ENV")
FORCE_VAR = "FORCE_DATABASE_IMPORT"
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})


@dataclass(frozen=True)
class Note:
    """Something ``init`` tells the operator about the import: the log event and its text."""

    #: ``import_skipped`` (no import happened) or ``import_forced`` (a production import ran
    #: because FORCE_DATABASE_IMPORT is true).
    event: str
    message: str


def production_marker(environ: Mapping[str, str]) -> str:
    """``"FLASK_ENV=production"`` (or APP_ENV) when the environment is production, else ``""``."""
    for var in PRODUCTION_VARS:
        if environ.get(var, "").strip().lower() == "production":
            return f"{var}={environ[var].strip()}"
    return ""


def import_forced(environ: Mapping[str, str]) -> bool:
    """``FORCE_DATABASE_IMPORT`` set to true (also 1/yes/on, any case); false when unset, blank,
    false/0/no/off. Any other value raises :class:`ConfigError`: a typo must not mean false."""
    raw = environ.get(FORCE_VAR, "")
    value = raw.strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    shown = repr(raw) if len(raw) <= 40 else repr(raw[:37]) + "..."
    reason = f"{shown} is neither true nor false (true/1/yes/on or false/0/no/off, any case)"
    raise ConfigError(f"environment {FORCE_VAR}", "", reason)


def skip_import_message(marker: str) -> str:
    """The one line that says production imports are off and what to do instead."""
    return (
        f"skipping database import in production ({marker}); set {FORCE_VAR}=true to force, "
        "or use backup/restore (scripts/restore-databases.sh) for production data"
    )


def import_skip_reason(environ: Mapping[str, str]) -> str:
    """Why an arrow import must not run here ("" when it may): production without the force flag.

    The CLI's ``import-arrows`` and ``init`` both apply this one rule.
    """
    forced = import_forced(environ)  # raises on a value that is neither true nor false
    marker = production_marker(environ)
    return skip_import_message(marker) if marker and not forced else ""


def import_note(environ: Mapping[str, str], file_count: int) -> Note | None:
    """What to log before importing ``file_count`` files: ``import_skipped`` (production, not
    forced: import nothing), ``import_forced`` (production, forced: import), or None."""
    skip = import_skip_reason(environ)
    if skip:
        return Note("import_skipped", skip)
    marker = production_marker(environ)
    if not marker:
        return None
    flag = f"{FORCE_VAR}={environ.get(FORCE_VAR, '').strip()}"
    message = f"{flag}: importing {file_count} arrow file(s) in production ({marker})"
    return Note("import_forced", message)
