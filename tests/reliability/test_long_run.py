"""The long run (issue 13, "How to prove it"): one real daemon for a few minutes with several
policies, two live writers (a WAL and a rollback-journal database), SIGHUPs that add a policy,
remove a policy and a database and bring an invalid file, a held database lock (a `busy`
refusal, then failing backups), hand-made changes to the backup directory (a truncated archive
that a prune read check marks damaged, a garbage `*.tar.gz`, the newest archive of a policy
deleted by hand, a database deleted under it) and a wall clock stepped back an hour and forward
again (libfaketime, as in test_clock_faults.py).

It is judged only from what the daemon says (its JSON log, `/metrics` and `/healthz` polled
through the whole run) against what the test did, and ends with a ledger that must balance:
every archive the daemon made was pruned by it, deleted by the test, or is on disk; nothing on
disk is unexplained; the counters agree with the log; every `/healthz` reason seen had a cause
the test injected, and none is left once the causes are gone.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from backup_sidecar.control import ControlError
from support.clock import step_clock
from support.daemon import Daemon, DaemonRunner, fault_config
from support.databases import SqlSession, Writer, holding_database_lock, make_db
from support.metrics import sample
from support.waiting import wait_until

#: How long any one phase may wait for the daemon to act.
PHASE_S = 60.0
SUFFIX = ".tar.gz"


# --- what the test injected, and what /healthz said meanwhile -----------------------------------


@dataclass
class Cause:
    """A fault the test injected: the /healthz reasons it may explain, from when it was
    injected until the test saw its alarm clear (``end`` None: still open)."""

    name: str
    patterns: tuple[str, ...]
    start: float
    end: float | None = None

    def explains(self, reason: str, at: float) -> bool:
        if at < self.start or (self.end is not None and at > self.end):
            return False
        return any(re.search(p, reason) for p in self.patterns)


@dataclass
class HealthPoller:
    """Polls /healthz in a thread for the whole run; every answer is kept with its time."""

    daemon: Daemon
    seen: list[tuple[float, int, tuple[str, ...]]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                status, body = self.daemon.healthz()
            except OSError as exc:  # judged at the end: the daemon must always answer
                status, body = -1, {"reasons": [f"no answer: {exc}"]}
            self.seen.append((time.monotonic(), status, tuple(body.get("reasons", []))))
            self.stop.wait(0.2)  # the poll interval, not a synchronisation

    def finish(self) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(15)


def reasons_now(daemon: Daemon) -> tuple[int, list[str]]:
    status, body = daemon.healthz()
    return status, list(body.get("reasons", []))


def wait_reason(
    daemon: Daemon, pattern: str, *, present: bool = True, timeout: float = PHASE_S
) -> list[str]:
    """Poll /healthz until a reason matching ``pattern`` is there (or gone)."""

    def check() -> list[str] | None:
        _, reasons = reasons_now(daemon)
        hit = any(re.search(pattern, r) for r in reasons)
        return (reasons or ["(none)"]) if hit == present else None

    what = f"/healthz {'to report' if present else 'to drop'} {pattern!r}"
    return list(wait_until(check, timeout=timeout, what=what))


def not_busy(daemon: Daemon, op: str, **fields: Any) -> dict[str, Any] | None:
    """The result of one request, or None when the daemon answered `busy` (a scheduled backup
    holds a database that a prune needs: try again)."""
    try:
        return daemon.request(op, **fields)
    except ControlError as exc:
        if exc.code != "busy":
            raise
        return None


def wait_healthy(daemon: Daemon, *, timeout: float = PHASE_S) -> None:
    """Poll /healthz until it answers 200; on timeout, say what it still reported."""
    last: list[tuple[int, list[str]]] = []

    def ok() -> bool:
        last[:] = [reasons_now(daemon)]
        return last[0][0] == 200

    try:
        wait_until(ok, timeout=timeout, what="/healthz 200")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; it still says {last}") from None


# --- the daemon's own account -------------------------------------------------------------------


def events(daemon: Daemon, name: str, **fields: Any) -> list[dict[str, Any]]:
    return daemon.log.find(name, **fields)


def completed(daemon: Daemon, policy: str, *, since: int, n: int) -> list[str]:
    """Wait for ``n`` scheduled/socket backups of ``policy`` after ``since``; their archives."""
    daemon.log.wait("backup_completed", since=since, policy=policy, count=n, timeout=PHASE_S)
    return [e["archive"] for e in daemon.log.find("backup_completed", since=since, policy=policy)]


def series(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def on_disk(backup_dir: Path) -> set[str]:
    return {p.name[: -len(SUFFIX)] for p in backup_dir.glob(f"*{SUFFIX}")}


def newest_of(backup_dir: Path, policy: str) -> str:
    """The newest archive of ``policy`` on disk by name (the wall clock is not stepped then)."""
    names = sorted(n for n in on_disk(backup_dir) if n.startswith(f"{policy}_"))
    assert names, f"no archive of {policy} on disk"
    return names[-1]


def stamp(event: dict[str, Any]) -> datetime:
    """When the daemon logged an event, by its own (faked) wall clock."""
    return datetime.fromisoformat(event["timestamp"])


def assert_prunes_spare_the_newest(
    daemon: Daemon, *, keep: dict[str, int], deleted: dict[str, int]
) -> None:
    """Replay the log: an `archive_pruned` may only name an archive outside the ``keep`` most
    recently made archives of its policy still there at that point (made, neither pruned nor
    deleted by hand: ``deleted`` maps a name to the log position of its deletion). A wall
    clock stepped back must not make the newest ones look oldest.

    A prune that listed the directory just before a deletion by hand logs after it: until the
    policy's next backup completes (its prune lists afresh), the hand-deleted archive may
    still count among the newest, and either view is accepted."""
    live: dict[str, list[str]] = {}
    listed_before: dict[str, list[str]] = {}  # a policy's view from before a hand deletion
    for i, e in enumerate(list(daemon.log.events)):
        for name, at in deleted.items():
            if at == i:
                for owner, names in live.items():
                    if name in names:
                        listed_before[owner] = list(names)
                        names.remove(name)
        if e["event"] == "restore_completed":  # logged before the prune that follows it
            live.setdefault("pre_restore", []).append(e["pre_restore_archive"])
            continue
        policy = e.get("policy")
        if policy not in keep:
            continue
        names = live.setdefault(policy, [])
        if e["event"] == "backup_completed":
            names.append(e["archive"])
            listed_before.pop(policy, None)
        elif e["event"] == "archive_pruned":
            newest = names[-keep[policy] :]
            before = listed_before.get(policy, names)[-keep[policy] :]
            assert e["archive"] not in newest or e["archive"] not in before, (
                f"pruned {e['archive']}, one of {newest}"
            )
            names.remove(e["archive"])
            if policy in listed_before and e["archive"] in listed_before[policy]:
                listed_before[policy].remove(e["archive"])


LATE = re.compile(r"^policy '(\w+)': the scheduled run at (\S+) was skipped: no worker was free")
#: What occupies the daemon's one scheduler worker, as its log shows it.
WORK = frozenset({"backup_completed", "backup_failed", "archive_pruned", "restore_drill_completed"})


def late_under_load(daemon: Daemon, reason: str) -> bool:
    """A "late" reason the test did not cause is still explained when the daemon's log shows it
    truthfully: the drop was logged for that policy and that scheduled time, and the one
    worker was busy with other runs meanwhile (something of another policy finished between
    the scheduled time and the drop). A loaded 2-core machine makes a 2s schedule miss."""
    match = LATE.match(reason)
    if match is None:
        return False
    policy, scheduled = match.groups()
    drops = daemon.log.find("scheduled_run_skipped", policy=policy, reason="late")
    drop = next((e for e in drops if e["scheduled"] == scheduled), None)
    if drop is None:
        return False
    start = datetime.fromisoformat(scheduled)
    end = datetime.fromisoformat(drop["timestamp"])
    return any(
        e["event"] in WORK
        and e.get("policy") != policy
        and start <= datetime.fromisoformat(e["timestamp"]) <= end
        for e in daemon.log.events
    )


#: Where the step back lands the faked clock: this many seconds past a minute, so that the
#: cron policy's next minute by that clock is 15 s away (a step is seen within a health
#: interval, 1 s), not anywhere up to a minute (the wait for it cost the test 0-60 s).
LAND_AT_S = 45


def step_back_an_hour(clock: Path) -> None:
    """Step the faked clock back an hour, less 0-59 s, to land LAND_AT_S past a minute."""
    step_clock(clock, f"{-3600 + int((LAND_AT_S - time.time()) % 60):+d}")


# --- the scenario -------------------------------------------------------------------------------


#: The keep of each scheduled backup policy (as configured below and by the first SIGHUP).
KEEP = {"fast": 3, "slow": 2, "minutely": 2, "added": 2, "pre_restore": 3}


def policies_v1() -> dict[str, Any]:
    return {
        "fast": {"every": "2s", "keep": 3, "databases": ["main", "journal"]},
        "slow": {"every": "4s", "keep": 2, "databases": ["main", "extra"]},
        "minutely": {"schedule": "* * * * *", "keep": 2},
        "drill": {"every": "10s", "keep": 0},
        "adhoc": {"keep": 2},  # no schedule: only the test's socket backups write it
        "pre_restore": {"keep": 3},
    }


def config_doc(
    tmp_path: Path, socket_path: Path, dbs: dict[str, Path], policies: dict[str, Any]
) -> dict[str, Any]:
    ages = {"fast": "45s", "slow": "45s", "added": "45s", "minutely": "3m"}
    path = fault_config(
        tmp_path / "sidecar.yaml",
        backup_dir=tmp_path / "backups",
        databases=dbs,
        socket_path=socket_path,
        policies=policies,
        health={
            "interval": "1s",
            "max_backup_age": {p: a for p, a in ages.items() if p in policies},
        },
        lock_timeout="2s",
        grace_period="10s",
    )
    return dict(yaml.safe_load(path.read_text()))


@pytest.mark.slow
def test_long_run_ledger_balances(
    tmp_path: Path,
    fake_clock: tuple[Path, dict[str, str]],
    sock_path: Path,
    daemons: DaemonRunner,
    writer_process: Callable[..., Writer],
    sql_session: Callable[..., SqlSession],
    record_property: Callable[[str, object], None],
    request: pytest.FixtureRequest,
) -> None:
    """A daemon runs four scheduled policies, a drill and a socket-only policy for a few
    minutes under two live writers while the test adds a policy, refuses a bad reload, holds a
    database (busy, then locked past lock_timeout), truncates an archive, plants a garbage
    archive, deletes the newest archive of a policy and a database, removes that database and
    its policy by SIGHUP, and steps the wall clock back an hour and forward again. At the end
    (SIGTERM, exit 0) the ledger balances: archives made = pruned + deleted by the test +
    present, nothing on disk is unexplained, retention holds each policy to its keep, the
    counters agree with the log, every /healthz reason seen maps to an injected cause, none is
    left once the causes are gone, and no series of the removed policy or database remains."""
    clock, clock_env = fake_clock
    data = tmp_path / "data"
    data.mkdir()
    dbs = {
        "main": make_db(data / "main.db", wal=True, rows=2000),
        "journal": make_db(data / "journal.db", wal=False, rows=2000),
        "extra": make_db(data / "extra.db", wal=True, rows=500),
    }
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    writers = [writer_process(dbs["main"], rate=20), writer_process(dbs["journal"], rate=5)]

    cfg = config_doc(tmp_path, sock_path, dbs, policies_v1())
    config_path = tmp_path / "sidecar.yaml"
    daemon = daemons.start(config_path, env=clock_env)
    # The whole log is kept beside the test's files, to read after a failure.
    request.addfinalizer(lambda: (tmp_path / "daemon.log").write_text("\n".join(daemon.log.raw)))
    started = time.monotonic()
    causes: list[Cause] = []
    hand_deleted: set[str] = set()
    busy_refusals: Counter[str] = Counter()

    def cause(name: str, *patterns: str) -> Cause:
        c = Cause(name, patterns, start=time.monotonic())
        causes.append(c)
        return c

    def close(c: Cause) -> None:
        c.end = time.monotonic()

    # Phase 0: every scheduled policy runs (a missing archive is caught up at start) and
    # /healthz is 200 before anything is injected (the drill's first run, 10 s after the start,
    # is waited for after phase 1, which injects nothing either).
    for policy in ("fast", "slow", "minutely"):
        completed(daemon, policy, since=0, n=1)
    wait_healthy(daemon)
    poller = HealthPoller(daemon)
    poller.start()

    # Phase 1: SIGHUP adds a policy; it runs and is pruned to its keep like the others.
    cfg["policies"]["added"] = {"every": "3s", "keep": 2, "databases": ["journal"]}
    cfg["health"]["max_backup_age"]["added"] = "45s"
    mark = daemon.log.mark()
    daemon.rewrite_config(cfg)
    daemon.signal(signal.SIGHUP)
    daemon.log.wait("config_reloaded", since=mark, timeout=PHASE_S)
    completed(daemon, "added", since=mark, n=3)
    daemon.log.wait("restore_drill_completed", timeout=PHASE_S)  # the drill passes

    # Phase 2: a held database (the lock file, then SQLite's lock). (With one worker, a run
    # waiting for the database makes the others late: those are dropped, counted and named by
    # /healthz too, until their next run succeeds.)
    lock = cause(
        "journal.db held (lock file, then SQLite lock)",
        # `minutely` covers every database: a minute that starts inside the window fails it too
        r"^policy '(fast|added|minutely)': the last backup failed: database 'journal' .*locked",
        r"^policy '\w+': the scheduled run at .* was skipped: no worker was free",
    )
    # 2a: the journal database's lock file is held (as by a CLI backup): a socket backup that
    # does not wait is refused `busy`, which is not a failure.
    with holding_database_lock(backup_dir, "journal"), pytest.raises(ControlError) as refused:
        daemon.request("backup", policy="adhoc", databases=["journal"])
    busy_refusals["adhoc"] += 1
    assert refused.value.code == "busy", refused.value

    # 2b: the application holds journal.db exclusively past lock_timeout: the backups on
    # it fail, /healthz says so, and every alarm clears once the lock goes.
    session = sql_session(dbs["journal"], busy_timeout=30)
    mark = daemon.log.mark()
    session.execute("BEGIN EXCLUSIVE")
    daemon.log.wait("backup_failed", since=mark, policy="fast", timeout=PHASE_S)
    wait_reason(daemon, r"^policy 'fast': the last backup failed: database 'journal'")
    session.execute("COMMIT")
    mark = daemon.log.mark()
    completed(daemon, "fast", since=mark, n=1)
    completed(daemon, "added", since=mark, n=1)
    wait_healthy(daemon, timeout=PHASE_S + 60)  # a failed `minutely` clears at its next minute
    close(lock)
    after_lock = daemon.log.mark()

    # Phase 3: archives cut short, restored from, planted and deleted by hand.
    # (a) The newest socket backup of `adhoc` is cut short: the prune read check marks it
    #     damaged, /healthz names it, and a newer good backup clears the reason.
    damage = cause(
        "truncated adhoc archive",
        r"^policy 'adhoc': the newest archive 'adhoc_[\w-]+' is damaged",
        r"^the last restore drill failed: .*adhoc_",
    )
    daemon.request("backup", policy="adhoc", wait=True)
    cut = daemon.request("backup", policy="adhoc", wait=True)["archive"]
    path = backup_dir / f"{cut}{SUFFIX}"
    size = path.stat().st_size
    with path.open("r+b") as f:  # its metadata (the first member) stays readable: only a
        f.truncate(size - 64)  # read to the end finds the database member and gzip cut short
    pruned = wait_until(
        lambda: not_busy(daemon, "prune", policy="adhoc"),
        timeout=PHASE_S,
        what="a prune between two scheduled backups",
    )
    # The prune's read check marks it (maybe in an attempt refused `busy` afterwards: it reads
    # before it locks), unless the drill (every 10s, on the newest verified archive of all)
    # read it first: either way a read check found it, and said so.
    found = daemon.log.wait("archive_damaged", archive=cut, timeout=PHASE_S)
    assert found["found_by"] in ("prune", "drill"), found
    assert [d["archive"] for d in pruned["damaged"]] in ([cut], []), pruned
    assert pruned["deleted"] == [], pruned  # the damaged one is not counted among the keep
    wait_reason(daemon, rf"^policy 'adhoc': the newest archive '{cut}' is damaged")
    daemon.request("backup", policy="adhoc", wait=True)
    wait_reason(daemon, r"'adhoc'.*damaged|restore drill failed", present=False)
    close(damage)
    listed = {a["name"]: a for a in daemon.request("list")["archives"]}
    assert listed[cut]["status"] == "damaged", listed[cut]

    # (b) Four restores of the journal database through the socket while its writer commits:
    #     each writes a pre_restore safety archive, and the daemon prunes those to their keep
    #     (3) after every restore, never the one just written.
    restores = cause(
        "restores of journal.db",
        r"^policy '\w+': the scheduled run at .* was skipped: no worker was free",
    )
    for _ in range(4):
        source = newest_of(backup_dir, "added")  # kept by retention for two more runs
        done = daemon.request(
            "restore", archive=source, databases=["journal"], confirm=True, wait=True
        )
        assert done["restored"] == ["journal"] and done["pre_restore_archive"], done
        assert (backup_dir / f"{done['pre_restore_archive']}{SUFFIX}").exists(), done
    wait_reason(daemon, r"was skipped", present=False)  # the runs it held up caught up
    close(restores)

    # (c) A garbage `*.tar.gz` of no configured policy: listed and counted damaged, never
    #     deleted by retention, never a crash; /healthz names it until it is deleted by hand.
    junk = "planted_20260101_000000"
    garbage = cause("planted garbage archive", rf"^policy 'planted': the newest archive '{junk}'")
    (backup_dir / f"{junk}{SUFFIX}").write_bytes(b"\x1f\x8b\x08\x00garbage" * 100)
    wait_until(
        lambda: sample(daemon.scrape(), "backup_sidecar_archives_damaged", policy="planted"),
        timeout=PHASE_S,
        what="the planted archive counted damaged",
    )
    wait_reason(daemon, rf"^policy 'planted': the newest archive '{junk}' is damaged")
    listed = {a["name"]: a for a in daemon.request("list")["archives"]}
    assert listed[junk]["status"] == "damaged", listed[junk]

    # (d) The newest archive of `fast` deleted by hand: the policy falls back to the next
    #     newest (no alarm) and its retention goes on.
    gone = newest_of(backup_dir, "fast")
    (backup_dir / f"{gone}{SUFFIX}").unlink()
    hand_deleted.add(gone)
    deleted_at = daemon.log.mark()
    mark = daemon.log.mark()
    completed(daemon, "fast", since=mark, n=2)

    # Phase 4: the `extra` database is deleted under the daemon: it is reported unhealthy and
    # `slow`'s backups fail; a SIGHUP that removes both clears every alarm and series of them.
    extra = cause(
        "extra.db deleted",
        r"^database 'extra' \(.*\) is unhealthy",
        # `minutely` covers every database: a minute that starts inside the window fails it too
        r"^policy '(slow|minutely)': the last backup failed: .*extra",
    )
    for suffix in ("", "-wal", "-shm"):
        dbs["extra"].with_name(dbs["extra"].name + suffix).unlink(missing_ok=True)
    wait_reason(daemon, r"^database 'extra' .* is unhealthy")
    wait_until(
        lambda: sample(daemon.scrape(), "backup_sidecar_database_healthy", database="extra") == 0,
        timeout=PHASE_S,
        what="database_healthy{database=extra} 0",
    )
    del cfg["databases"]["extra"]
    del cfg["policies"]["slow"]
    del cfg["health"]["max_backup_age"]["slow"]
    mark = daemon.log.mark()
    daemon.rewrite_config(cfg)
    daemon.signal(signal.SIGHUP)
    daemon.log.wait("config_reloaded", since=mark, timeout=PHASE_S)
    # (a `minutely` failed by the deleted database clears at its next minute)
    wait_reason(daemon, r"'extra'|'slow'", present=False, timeout=PHASE_S + 60)
    close(extra)

    # Phase 5: an invalid file is refused and the running policies go on unchanged.
    mark = daemon.log.mark()
    daemon.rewrite_config("policies:\n  fast: {every: 2s, keep: -1}\n")
    daemon.signal(signal.SIGHUP)
    daemon.log.wait("config_reload_refused", since=mark, timeout=PHASE_S)
    completed(daemon, "fast", since=mark, n=2)
    completed(daemon, "added", since=mark, n=2)
    daemon.rewrite_config(cfg)  # the valid file back (not reloaded: nothing changed)

    # Phase 6: the wall clock steps back an hour, then forward again (libfaketime); backups go
    # on through both steps. (Alarms are allowed while the clock is off: the overdue check
    # judges wall-clock ages.)
    step = cause(
        "wall clock stepped",
        r"^policy '\w+': last successful backup at .* is older than",
        r"^policy '\w+' has no successful backup within",
    )
    mark = daemon.log.mark()
    step_back_an_hour(clock)
    daemon.log.wait("wall_clock_stepped", since=mark, timeout=PHASE_S)
    completed(daemon, "fast", since=mark, n=3)
    completed(daemon, "added", since=mark, n=2)
    # The cron policy is retimed to the stepped clock: it runs at its next minute by that clock
    # (not an hour later), and its archive, dated an hour back, is its newest all the same.
    back = daemon.log.wait("backup_completed", since=mark, policy="minutely", timeout=90)
    when = re.search(r"_(\d{8}_\d{6})", back["archive"])
    assert when, back
    dated = datetime.strptime(when.group(1), "%Y%m%d_%H%M%S").replace(tzinfo=UTC)
    assert dated < datetime.now(UTC) - timedelta(minutes=50), back  # named by that clock
    mark = daemon.log.mark()
    step_clock(clock, "+0")
    daemon.log.wait("wall_clock_stepped", since=mark, timeout=PHASE_S)
    completed(daemon, "fast", since=mark, n=3)
    completed(daemon, "added", since=mark, n=3)
    # The cron policy runs again after the clock came back (its retimed minute is past: at once,
    # or at the next minute).
    daemon.log.wait("backup_completed", since=mark, policy="minutely", timeout=90)
    (backup_dir / f"{junk}{SUFFIX}").unlink()  # the last cause goes: so must its alarm
    wait_reason(daemon, r"'planted'", present=False)
    close(garbage)
    wait_healthy(daemon)
    close(step)
    failed_later = [
        e
        for e in daemon.log.events[after_lock:]
        if e["event"] == "backup_failed"
        and e["policy"] != "slow"
        and not (e["policy"] == "minutely" and "'extra'" in e["error"])  # see "extra.db deleted"
    ]
    assert not failed_later, failed_later  # only the causes the test injected fail a backup

    # The end, while running: every alarm is gone with its cause, and the counters agree with
    # the log (a counter is bumped just before its event is logged: poll until both settle).
    status, reasons = reasons_now(daemon)
    assert status == 200 and not reasons, reasons
    configured = ("fast", "added", "minutely", "adhoc")

    def counters_agree() -> dict[str, Any] | None:
        text = daemon.scrape()
        log_ok = Counter(e["policy"] for e in events(daemon, "backup_completed"))
        log_failed = Counter(e["policy"] for e in events(daemon, "backup_failed"))
        log_pruned = Counter(e["policy"] for e in events(daemon, "archive_pruned"))
        drills = len(events(daemon, "restore_drill_completed"))
        got: dict[str, tuple[float, ...]] = {
            p: (
                sample(text, "backup_sidecar_backup_runs_total", policy=p, result="ok") or 0,
                sample(text, "backup_sidecar_backup_runs_total", policy=p, result="error") or 0,
                sample(text, "backup_sidecar_backup_runs_total", policy=p, result="busy") or 0,
                sample(text, "backup_sidecar_prune_deleted_total", policy=p) or 0,
            )
            for p in configured
        }
        want: dict[str, tuple[float, ...]] = {
            p: (
                log_ok[p],
                log_failed[p] - busy_refusals[p],
                busy_refusals[p],
                log_pruned[p],
            )
            for p in configured
        }
        got["restore"] = (
            sample(text, "backup_sidecar_restore_runs_total", result="ok") or 0,
            sample(text, "backup_sidecar_prune_deleted_total", policy="pre_restore") or 0,
        )
        want["restore"] = (
            len(events(daemon, "restore_completed")),
            log_pruned["pre_restore"],
        )
        got["drill"] = (sample(text, "backup_sidecar_restore_drill_runs_total", result="ok") or 0,)
        want["drill"] = (drills,)
        return {"text": text, "got": got} if got == want else None

    final = wait_until(counters_agree, timeout=PHASE_S, what="the counters to agree with the log")
    text = final["text"]
    for name, labels, value in series(text):
        if labels.get("policy") == "slow":  # removed: only its archives on disk are counted
            assert name in ("backup_sidecar_archives", "backup_sidecar_archives_damaged"), name
            assert name == "backup_sidecar_archives" or value == 0, (name, value)
        assert labels.get("database") != "extra", (name, labels)
        assert labels.get("policy") != "planted" or value == 0, (name, labels, value)
        if name == "backup_sidecar_database_healthy":
            assert value == 1, (name, labels, value)
    # The overdue alert's inputs: every scheduled backup policy succeeded within its max age.
    scheduled = {
        labels["policy"]
        for name, labels, _ in series(text)
        if name == "backup_sidecar_scheduler_next_run_timestamp_seconds"
    }
    assert scheduled == {"fast", "added", "minutely", "drill"}, scheduled
    for policy in scheduled - {"drill"}:
        last = sample(text, "backup_sidecar_backup_last_success_timestamp_seconds", policy=policy)
        limit = sample(text, "backup_sidecar_backup_max_age_seconds", policy=policy)
        assert last and limit and time.time() - last < limit, (policy, last, limit)
    removal = next(e for e in events(daemon, "config_reloaded") if "slow" not in e["policies"])
    slow_after = [  # a run in flight at the reload may end after it; none may start after it
        e
        for e in events(daemon, "backup_completed", policy="slow")
        + events(daemon, "backup_failed", policy="slow")
        if stamp(e) - timedelta(seconds=e["duration_s"]) > stamp(removal)
    ]
    assert not slow_after, slow_after  # a removed policy never starts again

    # `list` shows archives in the order they were made (the hour-old names of the step back
    # among them), whatever the dates in their names.
    made_order = [e["archive"] for e in events(daemon, "backup_completed")]
    in_list = [a["name"] for a in daemon.request("list")["archives"] if a["name"] in made_order]
    assert in_list == sorted(in_list, key=made_order.index, reverse=True), in_list

    # SIGTERM: exit 0, then the ledger from the complete log.
    poller.finish()
    assert daemon.stop(timeout=60) == 0
    for w in writers:
        report = w.stop()
        assert report["errors"] == 0, report
    made = [e["archive"] for e in events(daemon, "backup_completed")]
    made += [e["pre_restore_archive"] for e in events(daemon, "restore_completed")]
    pruned_names = [e["archive"] for e in events(daemon, "archive_pruned")]
    present = on_disk(backup_dir)
    assert len(set(made)) == len(made), Counter(made).most_common(3)  # no name made twice
    assert len(set(pruned_names)) == len(pruned_names), Counter(pruned_names).most_common(3)
    ledger = {"pruned": set(pruned_names), "deleted by hand": hand_deleted, "present": present}
    for (one, a_set), (other, b_set) in itertools.combinations(ledger.items(), 2):
        assert not a_set & b_set, f"both {one} and {other}: {sorted(a_set & b_set)}"
    assert present <= set(made), f"on disk, never made: {sorted(present - set(made))}"
    assert set(pruned_names) <= set(made), sorted(set(pruned_names) - set(made))
    lost = set(made) - set(pruned_names) - hand_deleted - present
    assert not lost, f"made, never pruned, yet gone: {sorted(lost)}"
    assert_prunes_spare_the_newest(daemon, keep=KEEP, deleted={gone: deleted_at})
    policy_of = {e["archive"]: e["policy"] for e in events(daemon, "backup_completed")}
    policy_of |= {
        e["pre_restore_archive"]: "pre_restore" for e in events(daemon, "restore_completed")
    }
    on_disk_by = Counter(policy_of[n] for n in present)
    good_by = Counter(policy_of[n] for n in present - {cut})
    assert good_by["fast"] == 3 and good_by["added"] == 2, on_disk_by  # each to its keep
    assert good_by["adhoc"] == 2 and on_disk_by["adhoc"] == 3, on_disk_by  # + the damaged one
    assert 1 <= good_by["minutely"] <= 2 and good_by["slow"] >= 1, on_disk_by
    assert good_by["pre_restore"] == 3, on_disk_by  # 4 restores, pruned to keep 3

    # Every /healthz reason seen during the run had a cause the test injected, at that time.
    unexplained = sorted(
        {
            (round(at - started, 1), reason)
            for at, _status, reasons in poller.seen
            for reason in reasons
            if not any(c.explains(reason, at) for c in causes)
            and not late_under_load(daemon, reason)
        }
    )
    windows = [
        (c.name, round(c.start - started, 1), c.end and round(c.end - started, 1)) for c in causes
    ]
    assert not unexplained, "\n".join([f"{at}s: {r}" for at, r in unexplained] + [str(windows)])
    assert all(status == 200 for at, status, r in poller.seen if not r), "503 without a reason"
    seen_reasons = {r for _, _, rs in poller.seen for r in rs}
    figures = {
        "seconds": round(time.monotonic() - started, 1),
        "made": len(made),
        "pruned": len(pruned_names),
        "present": len(present),
        "healthz_polls": len(poller.seen),
        "distinct_reasons": len(seen_reasons),
    }
    record_property("long_run", json.dumps(figures))
    print(f"\nlong run: {figures}")
