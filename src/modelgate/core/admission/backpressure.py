"""Back-pressure on a flooding connection: a connection whose requests keep being refused (429,
``RESOURCE_EXHAUSTED``) without waiting as it was told has each further refusal held before
it is answered (issue 15).

The refusal memo (:mod:`.refusals`) makes a refusal cheap, but a client that ignores
``Retry-After`` still sends one request per round trip on each of its connections: thousands
a second, each parsed, authenticated and answered. This counts, per connection, the
refusals (rate limit, quota, concurrency cap, abuse block; from the memo or the full path)
that came before the ``Retry-After`` of the connection's previous refusal ran out
(the client did not wait as told); past ``burst`` of them in a row, each further one is
answered only after a hold of ``min(max_hold_s, Retry-After)`` (the ``Retry-After`` the
client is told: whole seconds, at least 1), less a random part of up to ``spread`` of it.
HTTP/1.1 answers a connection's requests in order, so the client gets nothing more answered
on that connection meanwhile (nginx's ``limit_req`` without ``nodelay`` delays excess
requests alike): each flooding connection then costs the server about one refusal per hold
instead of one per round trip.

Why the random part: a flooder's connections are refused together (its first burst), so
with equal holds they come back together, every hold, in lock-step; then the plan's bucket
has refilled, and the whole flood's next requests (its plan's burst served, the rest
refused) land on the event loop in one instant, ahead of whatever other tenants' requests
arrive then. Measured (bench/flood/fairness.py): tenants B's and C's slowest requests were
the ones sent within a few milliseconds of the flood's return each second. Drawn holds
spread the returns over ``spread`` of the hold, so the flood reaches the loop a connection
at a time (full jitter, as in retry back-off).

A refusal that comes after the previous one's ``Retry-After`` (a client that waits as told)
starts the count again. A served request does not: a flooder admitted at its plan's rate
between its refusals would otherwise get a new burst of unheld refusals after each one.

What it never does:

- delay a request that will be served: only a refusal, already decided, is held;
- delay another caller: the count is per connection (a connection a proxy shares between
  callers is counted as one: only its refusals are held, never what it carries for others);
- grow without bound: at most ``max_held`` refusals are held at once in the process (past
  that :meth:`refused` answers None: answer at once and close the connection, which costs
  the flooder a new connection), and at most ``max_connections`` connections are counted
  (the least recently refused first out); a count lasts at most ``idle_s`` past its last
  refusal (a quota's ``Retry-After`` of hours is not waited out);
- hold up a shutdown: :meth:`release` answers every held refusal at once and holds no more.

A connection is whatever the adapter names it by, hashable (REST: the client's address and
port; gRPC: the peer). The cost: nothing on a request that is not refused; a dictionary
update per refusal; one timer per held refusal. An adapter that cannot wait (the HTTP
protocol, answering a refusal before the app runs) asks :meth:`counts_unheld` instead, and
leaves a refusal to be held to the path that holds it.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Hashable

from modelgate.errors import ModelgateError

__all__ = ["HOLD_SPREAD", "RefusalBackpressure", "counted_down"]

#: the share of each hold that is drawn at random (the hold is between ``1 - HOLD_SPREAD``
#: and all of ``min(max_hold_s, Retry-After)``)
HOLD_SPREAD = 0.5


class RefusalBackpressure:
    """Per-connection counts of refusals in a row, and the holds past ``burst``.

    ``clock`` (monotonic seconds) times only the idle forgetting; holds are the event loop's
    timers. ``draw`` (uniform in [0, 1)) picks each hold's random part; ``spread`` 0: none."""

    def __init__(
        self,
        *,
        burst: int,
        max_hold_s: float = 1.0,
        max_held: int = 1024,
        max_connections: int = 10_000,
        idle_s: float = 10.0,
        spread: float = HOLD_SPREAD,
        clock: Callable[[], float] = time.monotonic,
        draw: Callable[[], float] = random.random,
    ) -> None:
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst} (off: build none)")
        if max_hold_s <= 0 or max_held < 1 or max_connections < 1:
            raise ValueError("max_hold_s, max_held and max_connections must be positive")
        if not 0 <= spread < 1:
            raise ValueError(f"spread must be in [0, 1), not {spread}")
        self.burst = burst
        self.max_hold_s = max_hold_s
        self.max_held = max_held
        self.max_connections = max_connections
        self.idle_s = idle_s
        self.spread = spread
        self.clock = clock
        self.draw = draw
        #: connection -> [refusals in a row, clock time until which a refusal still
        #: counts as the next in the row (its Retry-After, from when it was answered)];
        #: insertion order is recency (an entry moves to the end at each refusal)
        self.connections: dict[Hashable, list[float]] = {}
        self._held: set[asyncio.Future[None]] = set()
        self._released = False
        #: refusals held, and refusals answered at once with the connection closed because
        #: ``max_held`` were held (or the server was shutting down), since start (metrics)
        self.holds_total = 0
        self.closes_total = 0

    @property
    def released(self) -> bool:
        """Whether :meth:`release` was called (the server is shutting down)."""
        return self._released

    @property
    def held(self) -> int:
        """Refusals being held now."""
        return len(self._held)

    def refused(self, connection: Hashable, retry_after_s: float) -> float | None:
        """Count one refusal on ``connection`` and say how long to hold its answer:
        0.0, not at all (within the burst); a number of seconds, between ``1 - spread`` and
        all of ``min(max_hold_s, Retry-After)`` (:meth:`hold` it); None,
        answer at once and close the connection (as many refusals are held as may be, or
        the server is shutting down). ``retry_after_s``: the refusal's ``retry_after`` (0: none)."""
        now = self.clock()
        told = max(1.0, float(math.ceil(retry_after_s)))  # the Retry-After the client reads
        connections = self.connections
        entry = connections.pop(connection, None)
        count = 1 if entry is None or now >= entry[1] else int(entry[0]) + 1
        hold: float | None = 0.0
        if count > self.burst:
            full = self._released or len(self._held) >= self.max_held
            hold = None if full else min(self.max_hold_s, told) * (1 - self.spread * self.draw())
            if hold is None:
                self.closes_total += 1
            else:
                self.holds_total += 1
        self._forget(now)
        # the next refusal counts if it comes before this one's Retry-After, from its answer
        connections[connection] = [count, now + (hold or 0.0) + min(told, self.idle_s)]
        return hold

    def counts_unheld(self, connection: Hashable, retry_after_s: float) -> bool:
        """:meth:`refused` for a refusal answered only if it is not held: True, counted
        (within the burst: answer at once); False, nothing counted (it would be held or
        closed: the caller leaves it to the path that calls :meth:`refused` and holds).
        For an adapter that answers refusals where it cannot wait (the HTTP protocol)."""
        entry = self.connections.get(connection)
        if entry is not None and entry[0] >= self.burst and self.clock() < entry[1]:
            return False
        return self.refused(connection, retry_after_s) == 0.0

    async def hold(self, seconds: float) -> None:
        """Wait ``seconds`` (one timer), or until :meth:`release`. Call it right after
        :meth:`refused` gave the time, with no await between: the hold counts against
        ``max_held`` from its first step."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(seconds, _wake, waiter)
        self._held.add(waiter)
        try:
            await waiter
        finally:
            self._held.discard(waiter)
            timer.cancel()

    def release(self) -> None:
        """Shutting down: every held refusal is answered now, and none is held again."""
        self._released = True
        for waiter in list(self._held):
            _wake(waiter)

    def _forget(self, now: float) -> None:
        """Drop the least recently refused entries while their count is over, and one more
        when the table is full (the caller adds one): amortized O(1), as each entry is
        dropped once."""
        connections = self.connections
        while connections:
            oldest = next(iter(connections))
            if now < connections[oldest][1] and len(connections) < self.max_connections:
                return
            del connections[oldest]


def counted_down(error: ModelgateError, seconds: float) -> ModelgateError:
    """``error`` as it reads ``seconds`` after it was raised (held that long): its
    ``retry_after`` and ``details["reset"]`` less the time held (the reset never under 1 s,
    as the refusal memo gives it)."""
    retry_after = error.retry_after
    if retry_after is not None:
        retry_after = max(retry_after - seconds, 0.0)
    details = error.details
    if "reset" in details:
        details = {**details, "reset": max(details["reset"] - seconds, 1.0)}
    return ModelgateError(error.kind, error.message, retry_after=retry_after, details=details)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
