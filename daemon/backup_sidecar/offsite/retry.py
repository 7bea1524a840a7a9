"""Bounded retries with exponential backoff, and the rule for which store errors are transient.

Transient: the store did not answer, timed out, or answered 5xx/429 (obstore's GenericError).
Permanent: not found, refused preconditions, permission and authentication errors, bad paths:
retrying those only delays the clear error. The sleep is injected so tests never wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import obstore.exceptions as obx

from backup_sidecar.errors import OffsiteError, OffsiteRequestError, OffsiteUnavailableError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; waits ``first_delay``, doubling, capped at ``max_delay``.
    ``request_timeout`` bounds one HTTP request (seconds)."""

    attempts: int = 5
    first_delay: float = 1.0
    max_delay: float = 30.0
    request_timeout: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.first_delay < 0 or self.max_delay < self.first_delay:
            msg = f"bad retry policy: {self!r}"
            raise ValueError(msg)

    def delays(self) -> Iterator[float]:
        """The waits between attempts: ``attempts - 1`` of them."""
        delay = self.first_delay
        for _ in range(self.attempts - 1):
            yield delay
            delay = min(delay * 2, self.max_delay)


def is_transient(exc: BaseException) -> bool:
    """True for an error a later attempt may not meet (connection, timeout, server error)."""
    if isinstance(exc, obx.GenericError):
        text = str(exc)
        # object_store reports every HTTP status under GenericError: 4xx other than 408/429
        # are the caller's fault, not the network's.
        return not any(f"status code: {code}" in text for code in _PERMANENT_STATUSES)
    return isinstance(exc, (ConnectionError, TimeoutError))


_PERMANENT_STATUSES = ("400", "403", "404", "405", "409", "411", "412", "413", "416")


def run_with_retries(
    call: Callable[[], T],
    *,
    policy: RetryPolicy,
    url: str,
    operation: str,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """``call()`` until it succeeds, a permanent error, or the attempts run out (then
    OffsiteUnavailableError naming the operation and the last cause)."""
    delays = policy.delays()
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except OffsiteError:
            raise
        except obx.BaseError as exc:
            if not is_transient(exc):
                raise OffsiteRequestError(url, operation, first_line(exc)) from exc
            last: BaseException = exc
        except (ConnectionError, TimeoutError) as exc:
            last = exc
        delay = next(delays, None)
        if delay is None:
            raise OffsiteUnavailableError(url, operation, attempt, first_line(last)) from last
        if on_retry is not None:
            on_retry(attempt, last)
        policy.sleep(delay)


def first_line(exc: BaseException) -> str:
    """An exception's first line: obstore's messages go on with a multi-line debug dump."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
