"""Every control-socket operation against the running daemon: through ControlClient, through
`backup-sidecar ctl` subprocesses, and from clients that misbehave."""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backup_sidecar import jobs
from backup_sidecar.archiver import DatabaseSpec
from backup_sidecar.control import ControlError
from support.daemon import Daemon, DaemonRunner
from support.databases import SqlSession, holding_database_lock, holding_readers_out, row_count
from support.metrics import sample
from support.waiting import wait_until


@pytest.fixture
def quiet(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> Daemon:
    """A daemon over the `wal_db` database (100 rows) with nothing scheduled: every archive in
    its backup directory was asked for by the test."""
    cfg = daemon_config(
        databases={"user": wal_db}, policies={"manual": {"keep": 2}, "pre_restore": {"keep": 10}}
    )
    return daemons.start(cfg)


def error_code(call: Callable[[], object]) -> str:
    """The daemon's error code for a request that must fail."""
    with pytest.raises(ControlError) as info:
        call()
    return info.value.code


def add_rows(db: Path, n: int) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany("INSERT INTO items(body) VALUES (?)", [(f"later-{i}",) for i in range(n)])
    conn.close()


def utc_second() -> str:
    return f"{datetime.now(UTC):%Y%m%d_%H%M%S}"


def after_newest_archive_second(d: Daemon) -> None:
    """Wait for a UTC second no archive is named after: default names have one-second
    resolution."""
    stamp = max((p.name.removesuffix(".tar.gz")[-15:] for p in d.archives()), default="")
    wait_until(lambda: utc_second() > stamp, what="a new second")


def backup(d: Daemon, **fields: Any) -> str:
    """A socket backup named after a second no earlier archive has."""
    after_newest_archive_second(d)
    return str(d.request("backup", **fields)["archive"])


def test_control_listening_is_logged_once(quiet: Daemon) -> None:
    """The daemon logs `control_listening` once, with the socket's path and mode (the server
    and the service both logged it)."""
    quiet.log.wait("daemon_started")
    (listening,) = quiet.log.find("control_listening")
    assert listening["path"] == str(quiet.socket)
    assert listening["mode"] == "0600"


def test_every_op_through_the_control_client(quiet: Daemon, wal_db: Path) -> None:
    """ping, status, list, backup, verify, restore (refused without confirm, dry run, real),
    prune (dry run and real) and not_found answers over the real socket, with their effects on
    the live database, the backup directory and the metrics."""
    d = quiet
    pong = d.request("ping")
    assert pong["pong"] is True
    assert pong["pid"] == d.proc.pid
    status = wait_until(lambda: (s := d.request("status"))["healthy"] and s, what="healthy status")
    assert status["databases"] == {"user": str(wal_db)}
    assert status["backup_dir"] == str(d.backup_dir)
    assert status["next_runs"] == {}

    first = backup(d, databases=["user"])
    listed = {a["name"]: a for a in d.request("list")["archives"]}
    assert listed[first]["verified"] is True
    assert listed[first]["policy"] == "manual"
    assert listed[first]["databases"] == ["user"]
    verified = d.request("verify", archive=first)
    assert verified["ok"] is True
    assert verified["databases"] == ["user"]

    add_rows(wal_db, 50)
    assert error_code(lambda: d.request("restore", archive=first)) == "refused"
    assert error_code(lambda: d.request("restore", archive=first, confirm=False)) == "refused"
    assert row_count(wal_db) == 150
    assert not d.archives("pre_restore")
    plan = d.request("restore", archive=first, dry_run=True)
    assert plan["dry_run"] is True
    assert plan["restored"] == []
    assert row_count(wal_db) == 150
    assert not d.archives("pre_restore")
    done = d.request("restore", archive=first, confirm=True)
    assert done["restored"] == ["user"]
    assert row_count(wal_db) == 100
    (saved,) = d.archives("pre_restore")
    assert saved.name == f"{done['pre_restore_archive']}.tar.gz"

    assert error_code(lambda: d.request("verify", archive="manual_20000101_000000")) == "not_found"
    assert error_code(lambda: d.request("restore", archive="nope", confirm=True)) == "not_found"
    assert error_code(lambda: d.request("backup", databases=["nope"])) == "bad_request"

    second, third = backup(d), backup(d)
    dry = d.request("prune", policy="manual", dry_run=True)
    assert dry["deleted"] == [first]
    assert len(d.archives("manual")) == 3
    real = d.request("prune", policy="manual")
    assert real["deleted"] == [first]
    assert real["errors"] == []
    assert [p.name for p in d.archives("manual")] == [f"{second}.tar.gz", f"{third}.tar.gz"]
    assert d.archives("pre_restore") == [saved]

    text = d.scrape()
    assert sample(text, "backup_sidecar_prune_deleted_total", policy="manual") == 1
    assert sample(text, "backup_sidecar_restore_runs_total", result="ok") == 1
    assert sample(text, "backup_sidecar_backup_runs_total", policy="manual", result="ok") == 3
    assert (sample(text, "backup_sidecar_control_requests_total", op="restore", result="error")
            or 0) >= 1  # fmt: skip


def ctl_json(d: Daemon, *args: str) -> dict[str, Any]:
    done = d.ctl(*args, "--json")
    assert done.returncode == 0, f"ctl {args}: {done.stderr}"
    return dict(json.loads(done.stdout))


def test_every_op_through_ctl_subprocesses(quiet: Daemon, wal_db: Path) -> None:
    """`backup-sidecar ctl ...` (its own process, stdin not a TTY) for every op: results as
    JSON on stdout, exit 1 with one line on stderr for refused, busy and not_found (with
    --json, the socket's error object on stdout too)."""
    d = quiet
    assert ctl_json(d, "ping")["pid"] == d.proc.pid
    assert ctl_json(d, "status")["databases"] == {"user": str(wal_db)}
    made = ctl_json(d, "backup", "--db", "user")
    name = made["archive"]
    assert (d.backup_dir / f"{name}.tar.gz").is_file()
    assert [a["name"] for a in ctl_json(d, "list")["archives"]] == [name]
    assert ctl_json(d, "verify", name)["ok"] is True

    add_rows(wal_db, 7)
    refused = d.ctl("restore", name)  # no --force and no terminal to confirm on
    assert refused.returncode == 1
    assert "refused" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert row_count(wal_db) == 107
    assert ctl_json(d, "restore", name, "--dry-run")["dry_run"] is True
    assert row_count(wal_db) == 107
    restored = ctl_json(d, "restore", name, "--force")
    assert restored["restored"] == ["user"]
    assert row_count(wal_db) == 100
    assert (d.backup_dir / f"{restored['pre_restore_archive']}.tar.gz").is_file()

    missing = d.ctl("verify", "nope")
    assert missing.returncode == 1
    assert "not_found" in missing.stderr
    missing_json = d.ctl("verify", "nope", "--json")
    assert missing_json.returncode == 1
    assert json.loads(missing_json.stdout) == {
        "ok": False,
        "error": {"code": "not_found", "message": "no archive named 'nope'"},
    }

    with holding_database_lock(d.backup_dir, "user"):
        busy = d.ctl("backup", "--db", "user")
    assert busy.returncode == 1
    assert "busy" in busy.stderr

    assert ctl_json(d, "prune", "--dry-run")["deleted"] == []
    assert ctl_json(d, "prune", "--policy", "manual", "--keep", "0")["deleted"] == []  # newest kept
    assert (d.backup_dir / f"{name}.tar.gz").is_file()


def test_busy_while_another_operation_holds_the_database_and_wait_succeeds(
    quiet: Daemon,
) -> None:
    """While another process holds a database's lock (as a running backup, restore or prune
    does), backup, restore and prune of it answer `busy` at once and change nothing (a prune
    that would delete one of its archives; one deleting nothing needs no lock); with
    `"wait": true` the request waits and succeeds once the holder lets go."""
    d = quiet
    older = backup(d)
    archive = backup(d)
    with ThreadPoolExecutor(1) as pool, holding_database_lock(d.backup_dir, "user"):
        assert error_code(lambda: d.request("backup", databases=["user"])) == "busy"
        assert error_code(lambda: d.request("restore", archive=archive, confirm=True)) == "busy"
        assert error_code(lambda: d.request("prune", policy="manual", keep=1)) == "busy"
        assert d.request("prune", policy="manual", keep=2)["deleted"] == []  # no lock needed
        assert d.request("prune", dry_run=True)["deleted"] == []
        assert d.request("ping")["pong"] is True

        mark = d.log.mark()
        after_newest_archive_second(d)
        waiter = pool.submit(d.request, "backup", databases=["user"], wait=True)
        d.log.wait("control_request", op="backup", since=mark)
        assert not waiter.done()
        assert [p.name for p in d.archives()] == [f"{older}.tar.gz", f"{archive}.tar.gz"]
    answer = waiter.result(timeout=30)
    assert (d.backup_dir / f"{answer['archive']}.tar.gz").is_file()
    assert not d.archives("pre_restore")


@pytest.mark.slow
def test_two_backups_of_a_big_database_at_once(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], big_db: Path
) -> None:
    """Two socket backups of the same ~200 MB database: while the first runs, a second one
    answers `busy` at once, and one sent with `"wait": true` runs after the first and succeeds.

    The first backup is held in its snapshot's busy retries by an application lock until the
    other two requests are in, so a fast machine cannot finish it first."""
    cfg = daemon_config(
        databases={"user": big_db},
        policies={"manual": {"keep": 5}, "pre_restore": {"keep": 10}},
        health={"interval": "60s"},
        lock_timeout="10m",
    )
    d = daemons.start(cfg)
    with ThreadPoolExecutor(2) as pool:
        with holding_readers_out(big_db):
            first_second = utc_second()
            slow = pool.submit(d.request, "backup")
            staging = d.backup_dir / ".staging"
            wait_until(lambda: any(staging.glob("backup-*")), what="the first backup to start")
            started = time.monotonic()
            assert error_code(lambda: d.request("backup")) == "busy"
            assert time.monotonic() - started < 2.0, "busy must be answered at once"
            mark = d.log.mark()
            wait_until(lambda: utc_second() > first_second, what="a new second")
            waiting = pool.submit(d.request, "backup", wait=True)
            d.log.wait("control_request", op="backup", since=mark)
            assert not slow.done() and not waiting.done()
            assert d.archives() == []
        first, second = slow.result(timeout=120), waiting.result(timeout=120)
    assert first["archive"] != second["archive"]
    for result in (first, second):
        assert (d.backup_dir / f"{result['archive']}.tar.gz").is_file()


@contextlib.contextmanager
def raw_connection(path: Path, *, timeout: float = 15.0) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(str(path))
    try:
        yield sock
    finally:
        sock.close()


def read_line(sock: socket.socket) -> dict[str, Any]:
    """One reply line (the socket's timeout bounds the wait)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return dict(json.loads(data.split(b"\n")[0]))


def raw_exchange(path: Path, data: bytes, *, half_close: bool = False) -> dict[str, Any]:
    with raw_connection(path) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        return read_line(sock)


def test_misbehaving_clients_get_bad_request_and_the_daemon_goes_on(quiet: Daemon) -> None:
    """Oversized requests, garbage bytes, invalid JSON, unknown ops, a client that connects and
    sends nothing, a flood of idle clients and a client that disconnects before its answer:
    each gets `bad_request` (or nothing) and the daemon keeps answering `ping`."""
    d = quiet
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.settimeout(20)
    idle.connect(str(d.socket))
    try:
        cases = {
            "oversized line": b'{"op": "ping", "pad": "' + b"x" * 70_000 + b'"}\n',
            "oversized, no newline": b"x" * 70_000,
            "garbage bytes": b"\x00\xff\xfe\x80\x81garbage\n",
            "invalid JSON": b"{not json\n",
            "not an object": b"[1, 2, 3]\n",
            "unknown op": b'{"op": "format_disk"}\n',
            "unknown field": b'{"op": "ping", "sudo": true}\n',
            "archive as a path": b'{"op": "verify", "archive": "/etc/passwd"}\n',
        }
        for what, data in cases.items():
            reply = raw_exchange(d.socket, data)
            assert reply["ok"] is False, what
            assert reply["error"]["code"] == "bad_request", (what, reply)
        half = raw_exchange(d.socket, b'{"op": "ping"}', half_close=True)
        assert half["result"]["pong"] is True  # an unterminated line, then EOF, is a request

        mark = d.log.mark()
        with holding_database_lock(d.backup_dir, "user"), raw_connection(d.socket) as gone:
            gone.sendall(b'{"op": "backup", "wait": true}\n')
            d.log.wait("control_request", op="backup", since=mark)
        d.log.wait("control_client_gone", op="backup", since=mark)
        d.log.wait("backup_completed", since=mark)  # the client leaving did not cancel the work
        assert d.request("ping")["pong"] is True

        reply = read_line(idle)  # the server drops it after its read timeout (10 s)
        assert reply["error"]["code"] == "bad_request"
        assert "no complete request line" in reply["error"]["message"]
    finally:
        idle.close()

    flood = []
    try:
        for _ in range(80):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(d.socket))
            flood.append(s)
        assert d.client(timeout_s=10).request({"op": "ping"})["pong"] is True
    finally:
        for s in flood:
            s.close()
    assert d.request("status")["version"]
    assert d.proc.poll() is None


def test_empty_database_lists_and_unusable_policies_are_refused(
    quiet: Daemon, wal_db: Path
) -> None:
    """`"databases": []` in a confirmed restore (or a backup) is `bad_request` naming the field,
    never read as "every database": the live database keeps its rows and no pre_restore archive
    is taken. A socket backup under `pre_restore` (only restores write it) or under a policy that
    is not configured (its archives would never be pruned) is `bad_request` naming the policy and
    the known ones; nothing is written."""
    d = quiet
    name = backup(d)
    add_rows(wal_db, 5)
    for op, extra in (("restore", {"archive": name, "confirm": True}), ("backup", {})):
        reply = raw_exchange(d.socket, json.dumps({"op": op, "databases": [], **extra}).encode()
                             + b"\n")  # fmt: skip
        assert reply["ok"] is False, (op, reply)
        assert reply["error"]["code"] == "bad_request", (op, reply)
        assert "databases" in reply["error"]["message"], reply
    assert row_count(wal_db) == 105
    assert not d.archives("pre_restore")

    for policy in ("pre_restore", "nosuch"):
        reply = raw_exchange(d.socket, json.dumps({"op": "backup", "policy": policy}).encode()
                             + b"\n")  # fmt: skip
        assert reply["ok"] is False, (policy, reply)
        assert reply["error"]["code"] == "bad_request", (policy, reply)
        message = reply["error"]["message"]
        assert repr(policy) in message, message
        assert "known: manual" in message, message
        refused = d.ctl("backup", "--policy", policy)
        assert refused.returncode == 2, refused.stderr
        assert repr(policy) in refused.stderr and "known: manual" in refused.stderr
        direct = d.cli("backup", "--policy", policy)
        assert direct.returncode == 2, direct.stderr
        assert len(direct.stderr.strip().splitlines()) == 1, direct.stderr
        assert repr(policy) in direct.stderr and "known: manual" in direct.stderr
    assert [p.name for p in d.archives()] == [f"{name}.tar.gz"]


def test_restore_reaches_a_process_holding_the_database_open(
    quiet: Daemon, wal_db: Path, sql_session: Callable[..., SqlSession]
) -> None:
    """A socket restore while another process keeps a connection to the live WAL database
    open: that same connection then reads the restored rows, can go on writing, and a
    `pre_restore` archive holding the replaced content appears."""
    d = quiet
    app = sql_session(wal_db)
    assert app.execute("SELECT count(*) FROM items") == [[100]]
    archive = backup(d, databases=["user"])
    app.execute("INSERT INTO items(body) SELECT 'after-' || id FROM items WHERE id <= 40")
    assert app.execute("SELECT count(*) FROM items") == [[140]]

    done = d.request("restore", archive=archive, databases=["user"], confirm=True)
    assert done["restored"] == ["user"]
    assert app.execute("SELECT count(*) FROM items") == [[100]]
    assert app.execute("SELECT count(*) FROM items WHERE body LIKE 'after-%'") == [[0]]
    app.execute("INSERT INTO items(body) VALUES ('written after the restore')")
    assert app.execute("PRAGMA integrity_check") == [["ok"]]
    assert row_count(wal_db) == 101

    saved = d.backup_dir / f"{done['pre_restore_archive']}.tar.gz"
    assert saved.is_file()
    listed = {a["name"]: a for a in d.request("list")["archives"]}
    assert listed[done["pre_restore_archive"]]["policy"] == "pre_restore"
    assert d.request("verify", archive=done["pre_restore_archive"])["ok"] is True


def test_two_backups_of_one_policy_in_the_same_second_both_succeed(quiet: Daemon) -> None:
    """Two backups of the same policy asked for back to back within one wall-clock second (an
    operator running `ctl backup` twice) both succeed, as two distinct archives: default names
    have one-second resolution, and a taken one gets a suffix instead of failing."""
    d = quiet
    wait_until(lambda: time.time() % 1 < 0.2, what="the start of a second")
    first = d.request("backup")
    second = d.request("backup")
    assert first["archive"] != second["archive"]
    assert len(d.archives("manual")) == 2


def test_two_queued_backups_of_one_policy_in_the_same_second_both_succeed(quiet: Daemon) -> None:
    """Two `"wait": true` backups of the same policy queued in the same second behind another
    operation (say a restore, or a CLI backup) both succeed once it lets go, as two archives."""
    d = quiet
    with ThreadPoolExecutor(2) as pool:
        with holding_database_lock(d.backup_dir, "user"):
            mark = d.log.mark()
            wait_until(lambda: time.time() % 1 < 0.2, what="the start of a second")
            queued = [pool.submit(d.request, "backup", wait=True) for _ in range(2)]
            d.log.wait("control_request", op="backup", since=mark, count=2)
        first, second = (f.result(timeout=60) for f in queued)
    assert first["archive"] != second["archive"]


def test_prune_refuses_a_policy_neither_configured_nor_on_disk(quiet: Daemon, wal_db: Path) -> None:
    """Outside attack 1, finding 13: `prune --policy nope` said "nothing to delete", exit 0,
    where `backup --policy nope` exits 2. A name that is neither configured nor the policy of an
    archive on disk is now refused by the socket (`bad_request`), `ctl prune` and the CLI's
    `prune`/`cleanup` (exit 2, one line naming it); a removed policy whose archives are still
    there is pruned as before."""
    d = quiet
    removed = jobs.Runtime(
        backup_dir=d.backup_dir, databases={"user": DatabaseSpec("user", wal_db)}, keep={}
    )
    for _ in range(2):  # two archives of a policy the configuration no longer has
        after_newest_archive_second(d)
        jobs.run_backup(removed, policy="gone")
    with pytest.raises(ControlError) as refused:
        d.request("prune", policy="nope", dry_run=True)
    assert refused.value.code == "bad_request"
    assert "cannot prune policy 'nope': it is not configured and no archive has it" in str(
        refused.value
    )
    for done in (
        d.ctl("prune", "--policy", "nope"),
        d.cli("prune", "--policy", "nope"),
        d.cli("cleanup", "--policy", "nope", "--keep", "0"),
    ):
        assert done.returncode == 2, (done.args, done.stdout, done.stderr)
        errors = [ln for ln in done.stderr.splitlines() if not ln.startswith("{")]
        assert len(errors) == 1 and "'nope'" in errors[0], done.stderr
    assert len(d.archives("gone")) == 2

    pruned = d.request("prune", policy="gone", keep=1)
    assert len(pruned["deleted"]) == 1
    assert len(d.archives("gone")) == 1
