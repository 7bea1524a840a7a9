"""The configuration: YAML file + `SIDECAR_` environment, validated by pydantic at the edge.

Every nested model refuses unknown keys and is frozen. `load_settings` turns any problem into one
`ConfigError` naming the source (file or environment variable), the dotted key path and the reason.

Policies: a policy has a 5-field cron `schedule` (in `timezone`) or an `every` interval, or
neither (kept by retention, never scheduled). `pre_restore` is always present (default keep 10)
and never scheduled: restores make its archives. The policy named `drill` is special: when
scheduled, the daemon runs a restore drill on that schedule instead of a backup (it is kept here as
plain policy data; `keep: 0` is the usual value). The top-level `scrub:` takes a `schedule` or
`every` like a policy and schedules the scrub (job `scrub`; no policy may take that name).

Relative paths (YAML, environment) are taken relative to the `cwd` given to `resolve_paths`.
"""

from backup_sidecar.settings.loading import load_settings
from backup_sidecar.settings.model import (
    ControlConfig,
    DatabaseConfig,
    HealthConfig,
    MetricsConfig,
    PolicyConfig,
    ScrubConfig,
    Settings,
)
from backup_sidecar.settings.offsite import OffsiteConfig, OffsiteEncryptionConfig
from backup_sidecar.settings.paths import (
    Configuration,
    ResolvedPaths,
    database_file_name,
    load_configuration,
    resolve_paths,
)
from backup_sidecar.settings.values import ENV_PREFIX, parse_duration

__all__ = [
    "ENV_PREFIX",
    "Configuration",
    "ControlConfig",
    "DatabaseConfig",
    "HealthConfig",
    "MetricsConfig",
    "OffsiteConfig",
    "OffsiteEncryptionConfig",
    "PolicyConfig",
    "ResolvedPaths",
    "ScrubConfig",
    "Settings",
    "database_file_name",
    "load_configuration",
    "load_settings",
    "parse_duration",
    "resolve_paths",
]
