"""The metric families of incremental backups (the page store), per policy and database.

Declared here rather than in metric_families.py (at its size limit), with the same naming:
the ``backup_sidecar_`` prefix, counters ending in ``_total``, base units, and no label
carrying a backup's name. Moved by the metrics subscriber after each incremental backup.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from backup_sidecar.service.metric_families import PREFIX


class PageFamilies:
    """Pages read, pages new, bytes stored (counters) and chain length (gauge)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["policy", "database"]
        self.pages_read = Counter(
            PREFIX + "incremental_pages_read_total",
            "Pages incremental backups read from the live database (one read transaction each).",
            labels,
            registry=registry,
        )
        self.pages_new = Counter(
            PREFIX + "incremental_pages_new_total",
            "Pages incremental backups stored (changed or new since any stored page).",
            labels,
            registry=registry,
        )
        self.stored_bytes = Counter(
            PREFIX + "incremental_stored_bytes_total",
            "Bytes incremental backups wrote into the page store (packs, compressed).",
            labels,
            registry=registry,
        )
        self.chain_length = Gauge(
            PREFIX + "incremental_chain_length",
            "Backups in the chain of the policy's newest incremental backup (1: a new base).",
            labels,
            registry=registry,
        )
        self.head_checks = Counter(
            PREFIX + "incremental_head_checks_total",
            "Scheduled full checks (verify) of a policy's chain head, by result.",
            ["policy", "result"],
            registry=registry,
        )
        self._seen: set[tuple[str, str]] = set()
        self._heads: set[str] = set()
        self._lock = threading.Lock()

    def backup_stored(self, policy: str, pages: Mapping[str, Mapping[str, int]]) -> None:
        """One incremental backup's per-database stats (jobs.incremental.manifest_stats)."""
        for database, stats in pages.items():
            with self._lock:
                self._seen.add((policy, database))
            self.pages_read.labels(policy, database).inc(stats.get("pages_read", 0))
            self.pages_new.labels(policy, database).inc(stats.get("pages_new", 0))
            self.stored_bytes.labels(policy, database).inc(stats.get("bytes_stored", 0))
            self.chain_length.labels(policy, database).set(stats.get("chain_length", 1))

    def head_checked(self, policy: str, *, ok: bool) -> None:
        """One scheduled full check of ``policy``'s chain head (jobs/headcheck.py)."""
        with self._lock:
            if policy not in self._heads:
                self._heads.add(policy)
                for result in ("success", "failure"):
                    self.head_checks.labels(policy, result)
        self.head_checks.labels(policy, "success" if ok else "failure").inc()

    def forget(self, *, policies: Iterable[str] = (), databases: Iterable[str] = ()) -> None:
        """Remove the series of policies or databases a reload removed."""
        gone_p, gone_d = set(policies), set(databases)
        with self._lock:
            gone = {(p, d) for p, d in self._seen if p in gone_p or d in gone_d}
            self._seen -= gone
            heads = self._heads & gone_p
            self._heads -= heads
        for policy in heads:
            for result in ("success", "failure"):
                self.head_checks.remove(policy, result)
        for key in gone:
            for family in (self.pages_read, self.pages_new, self.stored_bytes, self.chain_length):
                family.remove(*key)
