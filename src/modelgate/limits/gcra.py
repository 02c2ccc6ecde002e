"""GCRA (generic cell rate algorithm), the arithmetic every limiter backend shares.

A bucket of ``limit`` tokens refills over ``window``: the emission interval is
``T = window / limit`` and each unit of cost moves the key's theoretical arrival time (TAT)
``T`` further into the future. The state of a key is its *backlog*, ``max(TAT - now, 0)``;
a hit of ``cost`` units is admitted iff::

    backlog + cost * T <= window

so ``limit`` units pass at once from an empty (or absent) key, then ``limit / window`` per
second. A refused hit leaves the TAT unchanged. The Redis backend runs the same formula in
Lua (:mod:`modelgate.storage.redis.rate_limits`); both build their :class:`Decision` here.

The TAT is kept in two parts, a whole number of clock ticks and a fraction of a tick
(:func:`split_tat`, :func:`backlog_of`), so its precision does not depend on the magnitude
of the clock: a single float holding ``now + k*T`` would lose about one rounding per hit,
and a burst of ``limit`` hits could then spill over ``window`` by a hair and refuse the
last one. Only the backlog (at most ``window``) is a float.

Units are the caller's (seconds, nanoseconds, microseconds), as long as ``backlog``,
``window`` and ``now`` agree.
"""

from __future__ import annotations

import math

from modelgate.core.admission.ports import Decision
from modelgate.errors import invalid

__all__ = [
    "COUNT_SLACK",
    "TOLERANCE",
    "admit",
    "allowed",
    "backlog_of",
    "check_arguments",
    "decide",
    "split_tat",
]

#: relative slack on ``window`` in the admission test; it absorbs the rounding of
#: ``limit`` additions of ``T`` (about 1e-16 each), and admits nothing early that matters:
#: a hit passes at most ``window * 1e-9`` before its time
TOLERANCE = 1e-9

#: slack when counting whole remaining tokens, so that 2.9999999999 counts as 3
COUNT_SLACK = 1e-6


def check_arguments(limit: int, window_s: float, cost: int) -> None:
    """Raise INVALID_ARGUMENT unless ``limit >= 1``, ``window_s > 0`` (finite) and
    ``0 <= cost <= limit``.

    A cost above the limit could never be admitted, however long the caller waited, so it is
    a malformed request rather than a refusal with an infinite ``retry_after``.
    """
    if limit < 1:
        raise invalid(f"rate limit must be at least 1, not {limit}")
    if not (window_s > 0 and math.isfinite(window_s)):
        raise invalid(f"rate-limit window must be a positive number of seconds, not {window_s}")
    if cost < 0:
        raise invalid(f"rate-limit cost must not be negative, not {cost}")
    if cost > limit:
        raise invalid(f"cost {cost} exceeds the limit of {limit} per {window_s:g} s")


def admit(backlog: float, limit: int, window: float, cost: int) -> float | None:
    """The backlog after admitting ``cost`` units, or ``None`` when they do not fit."""
    after = backlog + cost * (window / limit)
    if after > window * (1 + TOLERANCE):
        return None
    return after


def backlog_of(tat_whole: int, tat_frac: float, now: int) -> float:
    """``max(TAT - now, 0)`` for a TAT stored as ``tat_whole + tat_frac`` ticks."""
    # the integer difference is exact; only the small result is rounded
    return max(float(tat_whole - now) + tat_frac, 0.0)


def split_tat(now: int, backlog: float) -> tuple[int, float]:
    """The TAT ``now + backlog`` as (whole ticks, fraction of a tick in ``[0, 1)``)."""
    whole = math.floor(backlog)
    return now + whole, backlog - whole


def decide(*, allowed: bool, backlog_s: float, limit: int, window_s: float, cost: int) -> Decision:
    """The :class:`Decision` for a hit, given the key's backlog in seconds *after* the hit
    (which, for a refused hit, is the backlog it found)."""
    emission_s = window_s / limit
    available = (window_s - backlog_s) / emission_s
    remaining = min(max(math.floor(available + COUNT_SLACK), 0), limit)
    retry_after_s = 0.0 if allowed else max(backlog_s + cost * emission_s - window_s, 0.0)
    return Decision(allowed, limit, remaining, backlog_s, retry_after_s)


def allowed(backlog_s: float, limit: int, window_s: float) -> Decision:
    """``decide(allowed=True, ...)`` with positional arguments: the answer to an admitted hit,
    which every request that passes a limit gets (the cost does not enter an admitted
    decision)."""
    remaining = math.floor((window_s - backlog_s) / (window_s / limit) + COUNT_SLACK)
    return Decision(True, limit, min(max(remaining, 0), limit), backlog_s, 0.0)
