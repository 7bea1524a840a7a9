"""Each database from the newest confirmed offsite copy that holds it: the one choice behind
`restore --latest --from-offsite` (CLI and control socket) and `init --restore-from-offsite`.

Only copies of the configuration's own policies are candidates (``restore_candidates``): the
policy in the copy's name, and then the policy in its metadata, must be a configured one
(never `pre_restore`, which holds what a restore replaced), and the databases it holds (its
record's origin, then its metadata) exactly the set that policy backs up (jobs/offsite_ours.py,
the rule offsite retention applies; archives and incremental backups alike). A manual copy, one
of another sidecar sharing the prefix under its own policy names or under the same name with
another database set, is never taken (`restore NAME --from-offsite` still restores any copy).
Candidates are taken newest first by their record's origin, the creation sequence, never the
store's upload time alone (``copy_order``, jobs/offsite_order.py: the order of every offsite
verify and of offsite retention too); listing the store raises the backup directory's sequence
counter past every copy's, so a rebuilt host's next backup is the newest. A copy is fetched
(staging, checksum, decryption, verify, its record's origin against its metadata:
jobs/offsitecopy.py) only if it may hold a database still wanted; its manifest then says which
it holds. A copy that fails (``UNUSABLE_COPY``) is passed over for the next newest, for the
databases it would have given only; an unreachable store, a refused request or a wrong identity
stop the whole choice. Every copy is fetched before any database is restored
(``restore_groups``), so a download failure writes nothing live.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from backup_sidecar import archiver, offsite
from backup_sidecar.errors import (
    OffsiteDatabaseNotFoundError,
    OffsiteNothingToRestoreError,
    OffsiteNoUsableCopyError,
    OffsiteRestoreIncompleteError,
    RestoreIncompleteError,
    SidecarError,
)
from backup_sidecar.jobs.effort import Effort
from backup_sidecar.jobs.offsite import (
    UNUSABLE_COPY,
    Fetched,
    Skipped,
    fetch_archive,
    open_store,
)
from backup_sidecar.jobs.offsite_candidates import candidate_name, fetched_holds, page_candidates
from backup_sidecar.jobs.offsite_latest import latest_json, offsite_json
from backup_sidecar.jobs.offsite_order import copy_order, raise_sequence
from backup_sidecar.jobs.offsite_ours import Ours
from backup_sidecar.jobs.outcomes import Outcomes
from backup_sidecar.jobs.restore import run_restore
from backup_sidecar.jobs.runtime import Runtime

__all__ = ["latest_json", "offsite_json", "pick_copies", "restore_candidates", "restore_groups"]

log = structlog.get_logger(__name__)

#: ``<policy>_<YYYYmmdd>_<HHMMSS>`` (a unique name may carry a suffix after the time).
_DEFAULT_NAME = re.compile(r"(?P<policy>.+?)_\d{8}_\d{6}(?:[._-].*)?")


@dataclass(frozen=True)
class Group:
    """The databases one fetched copy gives."""

    fetched: Fetched
    databases: tuple[str, ...]

    @property
    def archive(self) -> str:
        return self.fetched.archive


@dataclass(frozen=True)
class Picked:
    """Which copy gives each wanted database, newest copy first."""

    url: str
    groups: tuple[Group, ...] = ()
    #: wanted databases no usable confirmed copy holds
    not_found: tuple[str, ...] = ()
    #: copies passed over (damaged, vanished, failing verify), newest first
    skipped: tuple[Skipped, ...] = field(default=())
    #: how many confirmed copies of the configured policies the store listed
    confirmed: int = 0
    #: wanted databases that some archive object of a configured policy (confirmed or not)
    #: would hold (by its record's origin, else its policy): the store is not empty for them
    stored: tuple[str, ...] = ()

    def databases(self) -> dict[str, str]:
        """database -> the archive it comes from."""
        return {db: g.archive for g in self.groups for db in g.databases}


def policy_of(name: str) -> str | None:
    """The policy in a default archive name, None for any other name."""
    match = _DEFAULT_NAME.fullmatch(name)
    return match.group("policy") if match else None


def restore_candidates(
    objects: Sequence[offsite.OffsiteObject], ours: Ours, *, confirmed: bool = True
) -> list[offsite.OffsiteObject]:
    """The copies that are ours (jobs/offsite_ours.py: a configured policy, exactly its
    database set, by the record's origin; never `pre_restore`), newest first by their origin
    (``copy_order``); only the confirmed ones unless ``confirmed`` is False. A copy whose record
    has no origin is taken by the policy in its name (its metadata decides once fetched)."""
    return [
        o
        for o in _configured(objects, ours.policies, confirmed=confirmed)
        if ours.origin(o) is not False
    ]


def _configured(
    objects: Sequence[offsite.OffsiteObject], policies: Collection[str], *, confirmed: bool
) -> list[offsite.OffsiteObject]:
    """The copies whose name carries one of ``policies`` (never `pre_restore`), newest first."""
    return sorted(
        (
            o
            for o in objects
            if (o.confirmed or not confirmed)
            and (name := candidate_name(o.name)) is not None
            and (policy := policy_of(name)) is not None
            and policy in policies
            and policy != archiver.PRE_RESTORE_POLICY
        ),
        key=copy_order,
        reverse=True,
    )


def pick_copies(
    rt: Runtime,
    wanted: Sequence[str],
    *,
    environ: Mapping[str, str],
    effort: Effort | None = None,
    on_skip: Callable[[Skipped], None] | None = None,
    on_fetched: Callable[[Fetched], None] | None = None,
) -> Picked:
    """Fetch, newest first, the confirmed copies that give each of ``wanted`` (module doc)."""
    spec = rt.require_offsite()
    store = open_store(spec, environ=environ)
    # (the config encrypts: a plaintext object is never confirmed, as for restore)
    listed = store.list(encrypted_only=bool(spec.recipients)).objects
    listed += page_candidates(store, encrypted_only=bool(spec.recipients))  # incremental
    raise_sequence(rt.backup_dir, listed, rt.keep)  # a rebuilt host's next backup is newest
    ours = Ours.of(rt)
    confirmed = restore_candidates(listed, ours)
    names = [(o.name, n) for o in confirmed if (n := candidate_name(o.name)) is not None]
    needed = list(dict.fromkeys(wanted))
    # (any copy of a configured policy counts here: init refuses to create empty a database
    # some copy holds, even one that is not ours, rather than pass it over in silence)
    stored = {db for o in _configured(listed, rt.keep, confirmed=False) for db in _held(rt, o)}
    groups: list[Group] = []
    skipped: list[Skipped] = []
    for object_name, candidate in names:
        if not needed:
            break
        if not _may_hold(rt, candidate, needed):
            continue
        try:
            # (a local archive of that name is used when it is the same archive)
            fetched = fetch_archive(rt, candidate, environ=environ, effort=effort)
        except UNUSABLE_COPY as exc:  # nothing written: the next newest copy
            skip = Skipped(object=object_name, reason=str(exc))
            log.warning("offsite_restore_candidate_failed", archive=candidate, error=str(exc))
            skipped.append(skip)
            if on_skip is not None:
                on_skip(skip)
            continue
        if on_fetched is not None:
            on_fetched(fetched)
        policy, members = fetched_holds(rt, fetched.archive)  # an archive or an incremental
        mine = ours.copy(policy, members)  # its metadata's policy and set: ours too
        held = tuple(n for n in members if n in needed) if mine else ()
        if held:
            groups.append(Group(fetched, held))
            needed = [n for n in needed if n not in held]
    found = (tuple(groups), tuple(needed), tuple(skipped), len(confirmed))
    return Picked(store.url, *found, tuple(n for n in wanted if n in stored))


def _policy_holds(rt: Runtime, policy: str | None) -> tuple[str, ...]:
    """The databases a copy of ``policy`` may give: its configured set; none for a policy the
    configuration does not have (manual, another sidecar's) or `pre_restore`."""
    if policy is None or policy not in rt.keep or policy == archiver.PRE_RESTORE_POLICY:
        return ()
    return rt.policy_databases.get(policy) or tuple(rt.databases)


def _held(rt: Runtime, obj: offsite.OffsiteObject) -> tuple[str, ...]:
    """The databases an archive object of a configured policy would give: those its record's
    origin names (a database added to the configuration since is not in it), else (no
    readable record) every one its policy backs up."""
    holds = _policy_holds(rt, policy_of(candidate_name(obj.name) or ""))
    origin = obj.record.origin if obj.record is not None else None
    return holds if origin is None else tuple(n for n in holds if n in origin.databases)


def _may_hold(rt: Runtime, name: str, needed: Sequence[str]) -> bool:
    return any(n in needed for n in _policy_holds(rt, policy_of(name)))


def restore_groups(
    rt: Runtime,
    picked: Picked,
    *,
    dry_run: bool = False,
    wait: float | None = None,
    effort: Effort | None = None,
    outcomes: Outcomes | None = None,
    catalog: archiver.Catalog | None = None,
) -> tuple[archiver.RestoreResult, ...]:
    """Each group through the normal restore (verify, pre-restore safety copy, locks), newest
    copy first. A group that fails after others restored raises OffsiteRestoreIncompleteError:
    what was restored from which archive, and every pre_restore archive that undoes it."""
    done: list[archiver.RestoreResult] = []
    for group in picked.groups:
        try:
            result = run_restore(
                rt,
                group.archive,
                names=group.databases,
                dry_run=dry_run,
                wait=wait,
                effort=effort,
                outcomes=outcomes,
                catalog=catalog,
            )
        except SidecarError as exc:
            if dry_run or not done:
                raise
            partial = exc if isinstance(exc, RestoreIncompleteError) else None
            restored = [(db, r.archive) for r in done for db in r.restored]
            undo = [r.pre_restore_archive for r in done if r.pre_restore_archive]
            if partial is not None:
                restored += [(db, group.archive) for db in partial.restored]
                undo += [partial.pre_restore_archive] if partial.pre_restore_archive else []
            raise OffsiteRestoreIncompleteError(
                restored=restored,
                failed=(group.archive, group.databases),
                reason=partial.reason if partial is not None else str(exc),
                pre_restore_archives=undo,
                rescue=partial.rescue if partial is not None else None,
            ) from exc
        done.append(result)
    return tuple(done)


def require_found(picked: Picked, *, asked: bool) -> None:
    """Refuse, before any database is restored, a choice that gives nothing (or, when the
    databases were ``asked`` for by name, one that misses any of them)."""
    if picked.groups and not (asked and picked.not_found):
        return
    if not picked.groups and picked.skipped:
        raise OffsiteNoUsableCopyError(picked.url, [(s.object, s.reason) for s in picked.skipped])
    if not picked.confirmed:
        raise OffsiteNothingToRestoreError(picked.url)
    raise OffsiteDatabaseNotFoundError(picked.url, picked.not_found)


def restore_latest(
    rt: Runtime,
    names: Sequence[str] | None,
    *,
    environ: Mapping[str, str],
    dry_run: bool = False,
    wait: float | None = None,
    effort: Effort | None = None,
    outcomes: Outcomes | None = None,
    catalog: archiver.Catalog | None = None,
) -> dict[str, Any]:
    """The socket's ``"from": "offsite", "latest": true``: each database (of ``names``, else
    all) from the newest confirmed copy holding it, every copy fetched before any is restored;
    the answer (``latest_json``)."""
    rt.require_offsite()
    wanted = [spec.name for spec in rt.select(names)]
    picked = pick_copies(rt, wanted, environ=environ, effort=effort)
    require_found(picked, asked=bool(names))
    results = restore_groups(
        rt, picked, dry_run=dry_run, wait=wait, effort=effort, outcomes=outcomes, catalog=catalog
    )
    return latest_json(picked, results)
