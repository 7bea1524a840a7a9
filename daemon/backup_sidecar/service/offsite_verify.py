"""The scheduled offsite verify in the daemon: its own thread, every `offsite.verify_every`
(default 1 day; the first one `min(verify_every, 5 min)` after the start, so a daemon
restarted more often than that still verifies), the newest confirmed copy of each policy
downloaded, decrypted and fully verified (jobs/offsite_verify.py).

Metrics: `backup_sidecar_offsite_verify_runs_total{result}` per copy,
`..._offsite_verify_failures_total{reason}`, `..._offsite_verify_last_success_timestamp_seconds
{policy}`. ``problems()`` is what is wrong now (one line per policy whose newest copy failed,
or why no verify could run), published after each verify as an ``OffsiteVerifyFinished``
outcome, which /healthz shows as reasons; each clears when the next verify of that policy
passes (or the `offsite` section goes). While a verify has found something wrong the next one
comes sooner than `verify_every`: at once when an upload pass confirms new copies
(``confirmed``), else after a backoff (1 min, doubling, at most 1 h and never later than
`verify_every`), so a reason clears soon after its cause goes. A copy skipped for want of the
identity file is said once (`offsite_verify_skipped`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

import structlog

from backup_sidecar.errors import SidecarError
from backup_sidecar.jobs.offsite_ours import Ours
from backup_sidecar.jobs.offsite_verify import (
    FAILED,
    OK,
    SKIPPED,
    verify_failure_reason,
    verify_offsite,
)
from backup_sidecar.jobs.outcomes import OffsiteVerifyFinished, Outcomes
from backup_sidecar.service.live import LiveConfig
from backup_sidecar.service.metric_families import MetricFamilies

log = structlog.get_logger(__name__)

FIRST_AFTER_S = 300.0
#: A failed verify is retried after this, doubling per failure in a row, at most RETRY_MAX_S.
RETRY_FIRST_S = 60.0
RETRY_MAX_S = 3600.0


def next_delay(every: float | None, failing: int) -> float:
    """Seconds to the next verify: ``every`` (60 s without an `offsite` section), sooner
    after ``failing`` verifies in a row that found something wrong (module docstring)."""
    regular = every if every is not None else 60.0
    if not failing:
        return regular
    backoff: float = RETRY_FIRST_S * 2.0 ** min(failing - 1, 16)
    return min(regular, RETRY_MAX_S, backoff)


class OffsiteVerifier:
    """The daemon's offsite verify thread (idle while no `offsite` section is configured)."""

    def __init__(
        self,
        *,
        live: LiveConfig,
        families: MetricFamilies,
        environ: Mapping[str, str],
        outcomes: Outcomes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._live = live
        self._families = families
        self._environ = environ
        self._outcomes = outcomes
        self._clock = clock
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by stop(), or by new copies after a failure
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._failed: dict[str, str] = {}
        self._failed_object: dict[str, str] = {}  # policy -> the copy that failed
        self._pass_error: str | None = None
        self._told_skipped = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="offsite-verify", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def confirmed(self, count: int) -> int:
        """An upload pass confirmed ``count`` new copies: while the last verify found
        something wrong, the next one runs now (its cause may be gone). Returns ``count``."""
        if count and self.problems():
            self._wake.set()
        return count

    def problems(self) -> list[str]:
        """What the last verifies found wrong (empty: every policy's newest copy passed)."""
        with self._lock:
            found = [f"offsite copy of policy {p!r}: {e}" for p, e in sorted(self._failed.items())]
            if self._pass_error is not None:
                found.append(f"the offsite verify could not run: {self._pass_error}")
            return found

    def damaged(self) -> dict[str, str]:
        """Each copy whose last verify failed -> why (the web page's offsite column)."""
        with self._lock:
            return {o: e for p, e in self._failed.items() if (o := self._failed_object.get(p))}

    def _every(self) -> float | None:
        spec = self._live.now.runtime.offsite
        return None if spec is None else spec.verify_every

    def _loop(self) -> None:
        every = self._every()
        delay = min(every, FIRST_AFTER_S) if every is not None else 60.0
        failing = 0  # verifies in a row that found something wrong
        while True:
            self._wake.wait(delay)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.run_once()
            except Exception as exc:  # a bug: logged, retried next time, never the daemon's end
                log.exception("offsite_verify_crashed", error=str(exc))
                self._families.offsite_verify_failures.labels("other").inc()
                with self._lock:
                    self._pass_error = f"the verify crashed: {exc}"
            if self._stop.is_set():
                break
            if self._outcomes is not None:  # /healthz: a reason until the next verify passes
                self._outcomes.publish(OffsiteVerifyFinished(tuple(self.problems())))
            failing = failing + 1 if self.problems() else 0
            delay = next_delay(self._every(), failing)

    def run_once(self) -> int:
        """One verify of every policy's newest copy; how many passed."""
        rt = self._live.now.runtime
        spec = rt.offsite
        if spec is None:  # the section went with a reload: nothing is watched any more
            with self._lock:
                self._failed.clear()
                self._failed_object.clear()
                self._pass_error = None
            return 0
        try:
            outcomes = verify_offsite(
                spec, environ=self._environ, ours=Ours.of(rt), should_stop=self._stop.is_set
            )
        except (SidecarError, OSError) as exc:
            reason = verify_failure_reason(exc)
            log.error("offsite_verify_failed", error=str(exc), reason=reason)
            self._families.offsite_verify_failures.labels(reason).inc()
            with self._lock:
                self._pass_error = str(exc)
            return 0
        passed = 0
        with self._lock:
            self._pass_error = None
            for done in outcomes:
                self._families.offsite_verify_runs.labels(done.result).inc()
                if done.result == OK:
                    passed += 1
                    self._failed.pop(done.policy, None)
                    self._failed_object.pop(done.policy, None)
                    moment = self._clock()
                    self._families.offsite_verify_last_success.labels(done.policy).set(moment)
                elif done.result == FAILED:
                    self._failed[done.policy] = done.error or "failed"
                    self._failed_object[done.policy] = done.object
                    self._families.offsite_verify_failures.labels(done.reason or "other").inc()
                elif done.result == SKIPPED and not self._told_skipped:
                    log.warning("offsite_verify_skipped", object=done.object, reason=done.error)
                    self._told_skipped = True
            if all(done.result != SKIPPED for done in outcomes):
                self._told_skipped = False  # said again if the identity goes again
            seen = {done.policy for done in outcomes}
            for gone in set(self._failed) - seen:  # no copy of it any more: nothing to report
                del self._failed[gone]
                self._failed_object.pop(gone, None)
        return passed
