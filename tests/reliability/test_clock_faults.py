"""Wall-clock faults (issue 5, fault 8): the clock of a running daemon steps back an hour, then
forward a day, through libfaketime (Debian's `faketime`; the test installs it as root if it is
missing, and skips, saying why, where it cannot).

The daemon runs with `LD_PRELOAD=libfaketime.so.1`, `FAKETIME_TIMESTAMP_FILE` (re-read on every
call: `FAKETIME_NO_CACHE=1`) and `FAKETIME_DONT_FAKE_MONOTONIC=1`, so only the wall clock jumps,
as an NTP step does; CLOCK_MONOTONIC runs on. libfaketime 0.9.10 answers EINVAL to
`clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)` in that mode, which is how Python 3.11's
`time.sleep` sleeps, so the daemon under test gets a `sitecustomize` that sleeps on a condition
wait instead (the only change to the process; condition waits are unaffected).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backup_sidecar.archiver import DatabaseSpec, create_backup, default_name
from daemon.conftest import short_dir
from reliability.test_backup_faults import Daemon, Daemons, make_db, published, write_config

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
SLEEP_SHIM = """\
import threading, time
def _sleep(seconds, _wait=threading.Event().wait):
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    _wait(seconds)
time.sleep = _sleep
"""


@pytest.fixture
def clocked_daemons(tmp_path: Path) -> Iterator[Daemons]:
    """Real daemons for one test, stopped and checked for crashes at teardown."""
    runner = Daemons(tmp_path)
    try:
        yield runner
    finally:
        runner.close()


@pytest.fixture
def control_socket() -> Iterator[Path]:
    """A control socket path short enough for AF_UNIX, in a private directory."""
    path = short_dir()
    yield path / "control.sock"
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def libfaketime() -> Path:
    """libfaketime's preload library, installed with apt-get (as root) if it is missing."""
    if not LIBFAKETIME.exists() and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "faketime"],
                       capture_output=True, check=False, timeout=300)  # fmt: skip
    if not LIBFAKETIME.exists():
        pytest.skip(f"libfaketime not installed ({LIBFAKETIME}); apt-get install faketime")
    return LIBFAKETIME


@pytest.fixture
def fake_clock(tmp_path: Path, libfaketime: Path) -> tuple[Path, dict[str, str]]:
    """A clock file (offset "+0" to start) and the environment that makes a process obey it."""
    clock = tmp_path / "faketime.rc"
    clock.write_text("+0\n")
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SLEEP_SHIM)
    env = {
        "LD_PRELOAD": str(libfaketime),
        "FAKETIME_TIMESTAMP_FILE": str(clock),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "PYTHONPATH": str(shim),
    }
    return clock, env


def step_clock(clock: Path, offset: str) -> None:
    """Step the faked wall clock to ``offset`` from the real one ("-1h", "+1d")."""
    tmp = clock.with_suffix(".tmp")
    tmp.write_text(f"{offset}\n")
    tmp.replace(clock)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def seed_hour_old_archives(
    backup_dir: Path, db: Path, *, policy: str, seconds: int
) -> dict[str, str]:
    """Archives of ``policy`` named for every second from an hour ago on (what a daemon wrote
    then), so that a clock stepped back an hour reuses their names; name -> sha256."""
    spec = DatabaseSpec("user", db)
    start = datetime.now(UTC) - timedelta(hours=1, seconds=3)
    seeded = {}
    for s in range(seconds):
        at = start + timedelta(seconds=s)
        info = create_backup([spec], backup_dir=backup_dir, name=default_name(policy, at),
                             policy=policy, now=at)  # fmt: skip
        seeded[info.name] = sha256(info.path)
    return seeded


def completed_after(daemon: Daemon, mark: int, policy: str, n: int) -> list[str]:
    """Wait for ``n`` completed backups of ``policy`` after ``mark``; their archive names."""
    daemon.log.wait("backup_completed", since=mark, policy=policy, count=n, timeout=40)
    return [e["archive"] for e in daemon.log.find("backup_completed", since=mark, policy=policy)]


def pruned_the_newest(daemon: Daemon, policy: str) -> list[str]:
    """Archives that a prune deleted while they were the newest completed backup of
    ``policy`` (the log is one ordered stream, so "newest so far" is exact)."""
    newest = None
    bad = []
    for event in list(daemon.log.events):
        if event.get("policy") != policy:
            continue
        if event["event"] == "backup_completed":
            newest = event["archive"]
        elif event["event"] == "archive_pruned" and event["archive"] == newest:
            bad.append(newest)
    return bad


@pytest.mark.slow
def test_wall_clock_steps_back_an_hour_and_forward_a_day(
    tmp_path: Path,
    fake_clock: tuple[Path, dict[str, str]],
    control_socket: Path,
    clocked_daemons: Daemons,
    record_property: Callable[[str, object], None],
) -> None:
    """The daemon's wall clock steps back an hour (onto names its archives from an hour ago
    hold) and then forward a day, with two `every: 2s` policies running: every archive that
    existed keeps its bytes (no name is overwritten), the backups after each step succeed under
    distinct names, a prune never deletes the backup just written (the newest content), and
    both schedules keep producing archives after both steps."""
    clock, env = fake_clock
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    db = make_db(tmp_path / "data" / "user_data.db", rows=200)
    config = write_config(tmp_path / "sidecar.yaml", backup_dir=backup_dir,
                          databases={"user": db}, socket_path=control_socket,
                          policies={"often": {"every": "2s", "keep": 1000},
                                    "kept": {"every": "2s", "keep": 2}})  # fmt: skip
    daemon = clocked_daemons.start(config, env=env)
    completed_after(daemon, 0, "kept", 3)
    completed_after(daemon, 0, "often", 2)
    seeded = seed_hour_old_archives(backup_dir, db, policy="often", seconds=45)

    figures: dict[str, object] = {}
    for step in ("-1h", "+1d"):
        before = {p.name: sha256(p) for p in published(backup_dir) if p.name.startswith("often")}
        mark = daemon.log.mark()
        step_clock(clock, step)
        often = completed_after(daemon, mark, "often", 3)
        kept = completed_after(daemon, mark, "kept", 3)
        assert not daemon.log.find("backup_failed", since=mark), daemon.log.find("backup_failed")
        for name, digest in before.items():  # "often" keeps everything: nothing may change
            assert sha256(backup_dir / name) == digest, f"{name} was overwritten after {step}"
        assert len(set(often)) == len(often) and not set(often) & set(before), often
        figures[step] = {"often": often, "kept": kept}
    for name, digest in seeded.items():
        assert sha256(backup_dir / f"{name}.tar.gz") == digest, name
    assert any(n.endswith("-2") for n in figures["-1h"]["often"]), figures  # type: ignore[index]
    assert pruned_the_newest(daemon, "kept") == [], pruned_the_newest(daemon, "kept")
    assert daemon.request("ping")["pong"] is True
    record_property("clock_steps", str(figures))
    print(f"\nclock steps: {figures}")
