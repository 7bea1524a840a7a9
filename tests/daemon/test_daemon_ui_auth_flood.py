"""Wrong passwords in a flood (issue 17): password checks run at most two at a time, so many
concurrent guesses cannot drive the daemon's memory up (each scrypt takes 16 MiB), and a client
whose password already passed still gets the page at once."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backup_sidecar.service.ui_auth import hash_password
from support.daemon import DaemonRunner
from support.ui import call

THREADS, TRIES = 48, 6
#: The daemon's RSS may grow this much during the flood (unbounded checks grew it by 300+ MB).
RSS_BOUND_KB = 120 * 1024


def _basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()}


def test_a_flood_of_wrong_passwords_stays_bounded_and_the_right_one_answers(
    daemons: DaemonRunner, daemon_config: Callable[..., dict[str, Any]], wal_db: Path
) -> None:
    """48 threads of wrong basic auth: every answer is 401 or 429 (busy, no hashing), the RSS
    stays within RSS_BOUND_KB of its start, and the password that passed before answers 200."""
    ui = {"enabled": True, "listen": "127.0.0.1:0", "user": "ops", "password_hash_env": "UI_HASH"}
    cfg = daemon_config(databases={"user": wal_db}, policies={"manual": {"keep": 1}}, ui=ui)
    d = daemons.start(cfg, env={"UI_HASH": hash_password("correct horse")})
    assert call(d, "GET", "/", token=None, headers=_basic("correct horse"))[0] == 200
    base = peak = d.rss_kb()
    statuses: list[int] = []
    lock = threading.Lock()

    def guess(n: int) -> None:
        for i in range(TRIES):
            status, _ = call(d, "GET", "/", token=None, headers=_basic(f"wrong {n} {i}"))
            with lock:
                statuses.append(status)

    workers = [threading.Thread(target=guess, args=(n,), daemon=True) for n in range(THREADS)]
    for w in workers:
        w.start()
    right: list[tuple[int, float]] = []
    while any(w.is_alive() for w in workers):
        peak = max(peak, d.rss_kb())
        if not right and len(statuses) > THREADS:  # the flood is under way
            began = time.monotonic()
            status, _ = call(d, "GET", "/", token=None, headers=_basic("correct horse"))
            right.append((status, time.monotonic() - began))
        time.sleep(0.02)  # a sampling interval, not synchronisation
    for w in workers:
        w.join()
    print(f"rss {base} -> peak {peak} kB; right request {right}")
    assert len(statuses) == THREADS * TRIES
    assert peak - base < RSS_BOUND_KB, (base, peak)
    [(status, took)] = right
    assert status == 200 and took < 5.0, (status, took)
    assert set(statuses) <= {401, 429} and 429 in statuses, sorted(set(statuses))
    d.log.wait("ui_auth_busy")
