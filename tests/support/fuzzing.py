"""The fuzzers' hypothesis settings: a fixed, reproducible budget, never flaky under load."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

#: Deterministic (``derandomize``, no example database), no per-example deadline (a loaded CI
#: machine is slower, never flaky), large or slow examples allowed. Derive the budget:
#: ``@settings(FUZZ, max_examples=300)``.
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
