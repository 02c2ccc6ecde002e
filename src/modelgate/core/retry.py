"""Retries that cannot make an outage worse: a budget, and backoff with full jitter.

:class:`RetryBudget` lets retries be at most ``ratio`` of the requests (20% by default, as
Envoy's and Finagle's budgets): every request deposits ``ratio`` of a token, every retry
takes one, and the bucket holds at most ``ratio * window`` tokens plus ``min_retries`` (so
a quiet service can still retry a few times). When the budget is spent, the first error
is the answer: a failing node is not hit by a multiple of its normal traffic.

:func:`backoff` is capped exponential backoff with full jitter (AWS's "full jitter"):
a uniform draw in ``[0, min(cap, base * 2 ** attempt)]``.
"""

from __future__ import annotations

import random

__all__ = ["RetryBudget", "backoff"]


class RetryBudget:
    __slots__ = ("_cap", "_tokens", "ratio", "requests", "retries")

    def __init__(self, ratio: float = 0.2, *, window: int = 100, min_retries: int = 10):
        if not 0 <= ratio <= 1 or window < 1 or min_retries < 0:
            raise ValueError("ratio must be in [0, 1], window >= 1, min_retries >= 0")
        self.ratio = ratio
        self._cap = ratio * window + min_retries
        self._tokens = float(min_retries)
        self.requests = 0
        self.retries = 0

    def request(self) -> None:
        """Count one request (its first attempt)."""
        self.requests += 1
        tokens = self._tokens + self.ratio
        self._tokens = tokens if tokens < self._cap else self._cap

    def try_retry(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        if self._tokens < 1:
            return False
        self._tokens -= 1
        self.retries += 1
        return True


def backoff(
    attempt: int, *, base_s: float = 0.005, cap_s: float = 0.1, rng: random.Random | None = None
) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
    ceiling = min(cap_s, base_s * (2 ** min(attempt, 30)))
    return (rng or random).uniform(0.0, ceiling)
