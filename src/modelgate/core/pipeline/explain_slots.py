"""The slots explanations are computed in, shared fairly between tenants.

An explanation takes a place here before anything else is spent on it (its rate limit, its
inference), so a refusal costs the caller nothing. A place is a slot (at most
``concurrency`` held at once) or a turn in the queue:

- a tenant may have at most ``tenant_queue`` explanations waiting (OVERLOADED beyond), so
  one tenant cannot fill the queue;
- the queue holds at most ``queue`` waiting explanations, except that a tenant with nothing
  waiting or computing may always wait with one (so at most ``queue`` plus one per tenant);
- a freed slot goes to the waiting tenant that holds the fewest slots, and among those to
  the one served least recently (round robin): a tenant that sends many explanations takes
  turns with the others rather than being served in arrival order ahead of them.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass, field

from modelgate.errors import ErrorKind, ModelgateError, deadline_exceeded

__all__ = ["ExplainSlots", "Reservation"]


@dataclass(eq=False, slots=True)
class Reservation:
    """One explanation's place: its slot, or its turn while it waits for one."""

    tenant: str
    #: arrival order (the last tie-break between tenants)
    order: int
    #: set when it is given a slot (None: it had one at once)
    granted: asyncio.Future[None] | None = None
    holds_slot: bool = False
    released: bool = False
    _waiting: bool = field(default=False, repr=False)


class ExplainSlots:
    """``concurrency`` slots and a bounded queue, shared fairly between tenants."""

    def __init__(self, concurrency: int, queue: int, tenant_queue: int):
        self.concurrency = concurrency
        self.queue = queue
        self.tenant_queue = tenant_queue
        self._running: dict[str, int] = {}
        self._waiting: dict[str, deque[Reservation]] = {}
        self._waiting_total = 0
        self._order = itertools.count()
        #: when each tenant holding or waiting was last given a slot (round robin)
        self._served: dict[str, int] = {}
        self._grants = itertools.count()

    @property
    def held(self) -> int:
        """Slots held now."""
        return sum(self._running.values())

    @property
    def waiting(self) -> int:
        """Explanations waiting for a slot now."""
        return self._waiting_total

    def reserve(self, tenant: str) -> Reservation:
        """A place for one of ``tenant``'s explanations; OVERLOADED when none is left for it
        (nothing is held then)."""
        reservation = Reservation(tenant, next(self._order))
        if self.held < self.concurrency and self._waiting_total == 0:
            self._hold(reservation)
            return reservation
        mine = len(self._waiting.get(tenant, ()))
        if mine >= self.tenant_queue:
            raise ModelgateError(
                ErrorKind.OVERLOADED,
                f"this tenant already has {mine} explanations waiting (at most "
                f"{self.tenant_queue}); retry shortly",
                retry_after=1.0,
            )
        idle = mine == 0 and self._running.get(tenant, 0) == 0
        if self._waiting_total >= self.queue and not (idle and self.queue > 0):
            raise ModelgateError(
                ErrorKind.OVERLOADED,
                f"too many explanations waiting ({self._waiting_total}); retry shortly",
                retry_after=1.0,
            )
        reservation.granted = asyncio.get_running_loop().create_future()
        reservation._waiting = True
        self._waiting.setdefault(tenant, deque()).append(reservation)
        self._waiting_total += 1
        return reservation

    async def wait(self, reservation: Reservation, deadline: float | None) -> None:
        """Until the reservation holds a slot; DEADLINE_EXCEEDED when ``deadline`` (a
        ``time.monotonic()`` instant) comes first."""
        if reservation.holds_slot:
            return
        assert reservation.granted is not None
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(reservation.granted)
        except TimeoutError:
            if not reservation.holds_slot:
                raise deadline_exceeded() from None

    def release(self, reservation: Reservation) -> None:
        """Gives the place back (its slot to the next tenant's turn); idempotent."""
        if reservation.released:
            return
        reservation.released = True
        if reservation._waiting:
            queue = self._waiting[reservation.tenant]
            queue.remove(reservation)
            reservation._waiting = False
            self._waiting_total -= 1
            if not queue:
                del self._waiting[reservation.tenant]
            if reservation.granted is not None and not reservation.granted.done():
                reservation.granted.cancel()
        if reservation.holds_slot:
            reservation.holds_slot = False
            left = self._running[reservation.tenant] - 1
            if left:
                self._running[reservation.tenant] = left
            else:
                del self._running[reservation.tenant]
        tenant = reservation.tenant
        if tenant not in self._running and tenant not in self._waiting:
            self._served.pop(tenant, None)  # nothing left: kept for no idle tenant
        self._dispatch()

    def _hold(self, reservation: Reservation) -> None:
        reservation.holds_slot = True
        self._running[reservation.tenant] = self._running.get(reservation.tenant, 0) + 1
        self._served[reservation.tenant] = next(self._grants)

    def _dispatch(self) -> None:
        """Free slots to the waiting tenants holding the fewest, least recently served
        first."""
        while self._waiting_total and self.held < self.concurrency:
            tenant = min(
                self._waiting,
                key=lambda t: (
                    self._running.get(t, 0),
                    self._served.get(t, -1),
                    self._waiting[t][0].order,
                ),
            )
            queue = self._waiting[tenant]
            reservation = queue.popleft()
            if not queue:
                del self._waiting[tenant]
            self._waiting_total -= 1
            reservation._waiting = False
            self._hold(reservation)
            assert reservation.granted is not None
            if not reservation.granted.done():
                reservation.granted.set_result(None)
