"""When a failed call is tried again, and after how long.

Two kinds of call:

- *safe* calls: reads (GET), PUT and DELETE, and any call carrying an ``Idempotency-Key``.
  Tried again after a connection error, a timeout, and 408, 429, 500, 502, 503 and 504;
  and 409 when the call carries a key (the key's first request still runs);
- every other call (inference, embeddings, feedback): tried again only when the server
  surely did no work: a connection that never opened, and 429 and 503 (refused by a limit,
  a quota or load shedding before the request ran). A read timeout or a 500 is not retried:
  the model may have run, and been metered.

Each wait is the server's ``Retry-After`` when it sends one, else an exponential back-off
with full jitter. The budget bounds both the number of attempts and the time from the first
attempt: a wait that would end past ``total_timeout`` is not started, and the last error
is raised instead.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx

from modelgate_client._errors import retry_after_seconds

__all__ = ["RetryPolicy"]

_SAFE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_KEYED_STATUSES = _SAFE_STATUSES | {409}
_REFUSED_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The retry budget: at most ``max_attempts`` attempts (1: no retries) within
    ``total_timeout`` seconds of the first; back-off waits grow from ``backoff`` seconds,
    doubling, to at most ``max_backoff``."""

    max_attempts: int = 3
    total_timeout: float = 60.0
    backoff: float = 0.5
    max_backoff: float = 8.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.total_timeout < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("retry times must not be negative")

    def delay_after_response(
        self,
        response: httpx.Response,
        *,
        safe: bool,
        attempt: int,
        elapsed: float,
        keyed: bool = False,
    ) -> float | None:
        """Seconds to wait before trying again after the error ``response`` (``keyed``: the
        call carries an Idempotency-Key); None: stop."""
        statuses = _KEYED_STATUSES if keyed else _SAFE_STATUSES if safe else _REFUSED_STATUSES
        if response.status_code not in statuses:
            return None
        return self._delay(retry_after_seconds(response.headers), attempt, elapsed)

    def delay_after_error(
        self, error: httpx.TransportError, *, safe: bool, attempt: int, elapsed: float
    ) -> float | None:
        """Seconds to wait before trying again after a transport error; None: stop."""
        # the request never left: no connection, or none free in the pool
        never_sent = isinstance(
            error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout
        )
        if not (safe or never_sent):
            return None
        return self._delay(None, attempt, elapsed)

    def _delay(self, retry_after: float | None, attempt: int, elapsed: float) -> float | None:
        if attempt >= self.max_attempts:
            return None
        if retry_after is None:
            cap = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
            delay = random.uniform(0, cap)  # jitter, not a secret
        else:
            delay = retry_after
        if elapsed + delay > self.total_timeout:
            return None
        return delay


#: the policy of a client created without one
DEFAULT_RETRY = RetryPolicy()
#: no retries at all
NO_RETRY = RetryPolicy(max_attempts=1)
