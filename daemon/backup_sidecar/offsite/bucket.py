"""What the lease and the download need of a store: its objects, its target and the names of
its keys. A protocol, so that ``store`` (which uses both) and they do not import each other."""

from __future__ import annotations

from typing import Protocol

from backup_sidecar.offsite import record as rec
from backup_sidecar.offsite.objects import Objects
from backup_sidecar.offsite.target import OffsiteTarget


class Bucket(Protocol):
    """The part of ``store.Store`` its helpers read."""

    target: OffsiteTarget
    objects: Objects

    @property
    def url(self) -> str: ...

    def key(self, name: str) -> str: ...

    def read_record(self, name: str) -> rec.Record | None: ...

    def record_key(self, name: str) -> str: ...
