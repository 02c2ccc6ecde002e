"""Shedding on queueing delay (issue 15): a CoDel-style controller that says when a
saturated process must refuse new inference requests at once, before reading them.

The in-flight cap (:class:`~modelgate.core.admission.admission.Admission`) counts only
requests already parsed, authenticated and admitted; under CPU saturation the queue forms
before that, in socket buffers and the event loop, and requests time out unanswered while
the cap is never reached. :class:`QueueDelay` is fed delay samples instead (the event
loop's lag, :mod:`modelgate.boot.loop_lag`) and applies CoDel's rule: it sheds once the
delay has stayed at or above ``target`` for a whole ``interval`` (the minimum over the
interval is above target: a short burst is absorbed, a standing queue is not), and stops
as soon as one sample falls under ``target`` (that interval's minimum is under it).

Priority tiers, kept simple: while the delay has stayed above ``target`` only, requests of
plans below the highest priority (9) are shed (and every request when authentication is
off: there are no tiers to protect); once it has also stayed above twice ``target`` for an
interval, every request is shed. The admin tenant counts as the highest tier.

Readiness follows the same signal: not ready once shedding has lasted ``ready_after_s``,
ready again as soon as it stops. Readiness only moves a load balancer's traffic away;
requests that still arrive are served or shed by the same rule, so a single replica never
locks itself out.

Pure and O(1) per sample; the clock is injectable (tests use a manual one). The adapters'
cost while not shedding is one attribute read (:attr:`QueueDelay.shedding`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from modelgate.core.access.authentication import ADMIN_TENANT
from modelgate.core.access.identity import Principal
from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["HIGHEST_PRIORITY", "QueueDelay"]

#: the highest plan priority: shed only when the delay passes twice the target
HIGHEST_PRIORITY = 9


class _Above:
    """CoDel's test for one threshold: has every sample stayed at or above it for at least
    ``interval`` (since the first sample of the current run above it)?"""

    __slots__ = ("interval", "since", "threshold")

    def __init__(self, threshold: float, interval: float) -> None:
        self.threshold = threshold
        self.interval = interval
        #: when the current run of samples at or above the threshold began; None: no run
        self.since: float | None = None

    def observe(self, delay: float, now: float) -> bool:
        if delay < self.threshold:
            self.since = None
            return False
        if self.since is None:
            self.since = now
        return now - self.since >= self.interval


class QueueDelay:
    """Whether to shed, from queueing-delay samples (seconds).

    ``count``: told of each request shed, with the caller's plan priority (None: no plan);
    the metrics' counter."""

    def __init__(
        self,
        *,
        target_s: float,
        interval_s: float,
        ready_after_s: float = 2.0,
        retry_after_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        count: Callable[[int | None], None] | None = None,
    ) -> None:
        if target_s <= 0 or interval_s <= 0:
            raise ValueError("target_s and interval_s must be positive")
        self.target_s = target_s
        self.interval_s = interval_s
        self.ready_after_s = ready_after_s
        self.retry_after_s = retry_after_s
        self.clock = clock
        self.count = count
        #: shed requests of plans below the highest priority (the adapters read only this
        #: while not shedding)
        self.shedding = False
        #: shed every request: the delay has also stayed above twice the target
        self.severe = False
        #: when the current shedding began (meaningful while :attr:`shedding`)
        self.shedding_since = 0.0
        #: the last sample, for the metrics
        self.last_s = 0.0
        self._above = _Above(target_s, interval_s)
        self._above_twice = _Above(2 * target_s, interval_s)

    def observe(self, delay_s: float) -> None:
        """One delay sample, taken now."""
        now = self.clock()
        self.last_s = delay_s
        shedding = self._above.observe(delay_s, now)
        self.severe = self._above_twice.observe(delay_s, now)
        if shedding and not self.shedding:
            self.shedding_since = now
        self.shedding = shedding

    def refuses(self, principal: Principal | None) -> bool:
        """Whether a new request of ``principal`` (None: authentication is off) is shed
        now; a shed request is counted. Call only while :attr:`shedding`."""
        if not self.shedding:
            return False
        priority = None
        if principal is not None:
            priority = principal.plan.priority
            top = principal.tenant_id == ADMIN_TENANT or priority >= HIGHEST_PRIORITY
            if top and not self.severe:
                return False
        if self.count is not None:
            self.count(priority)
        return True

    def error(self) -> ModelgateError:
        """The answer of a shed request: 503 / UNAVAILABLE with ``Retry-After``."""
        return ModelgateError(
            ErrorKind.OVERLOADED,
            "the server is overloaded: requests wait too long to be served; "
            "requests of lower-priority plans are refused first",
            retry_after=self.retry_after_s,
        )

    def ready(self) -> bool:
        """False once shedding has lasted ``ready_after_s``: a load balancer should send
        traffic elsewhere (the process still serves what it admits)."""
        return not self.shedding or self.clock() - self.shedding_since < self.ready_after_s
