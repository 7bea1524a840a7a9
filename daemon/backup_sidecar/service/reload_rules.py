"""What a reload cannot change: keys set up once at start."""

from __future__ import annotations

from backup_sidecar.settings import ResolvedPaths, Settings


def start_only_changes(
    old: Settings, old_paths: ResolvedPaths, new: Settings, new_paths: ResolvedPaths
) -> list[str]:
    """Keys whose new value would only take effect at start; a reload must not pretend to apply
    them (a moved backup_dir would even escape the one-daemon-per-directory lock)."""
    changed = ["backup_dir"] if old_paths.backup_dir != new_paths.backup_dir else []
    changed += [
        key for key in ("control", "metrics", "ui") if getattr(old, key) != getattr(new, key)
    ]
    if old.health.interval != new.health.interval:
        changed.append("health.interval")
    return changed
