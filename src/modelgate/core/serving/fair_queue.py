"""The batcher's waiting requests, taken per tenant in turn (issue 15).

A plain FIFO serves tenants in arrival order, so the tenant that queues most gets most of
the model; one tenant's thousand queued rows would hold another tenant's single row back
for the whole of them. :class:`FairQueue` keeps one FIFO lane per tenant and forms each
batch by deficit round robin (Shreedhar and Varghese, 1995), counting rows:

- each turn credits the tenant ``max(1, max_batch_size * weight / heaviest weight
  waiting)`` rows (the heaviest tenant waiting may fill a whole batch in one turn, a light
  one gets at least a row per turn), the credit capped at one batch;
- the tenant's requests are taken in order while its credit covers them; a request of
  another shape than the batch's (not mergeable) is left in place for a later batch;
- the turn ends when the credit runs out (the next tenant's turn begins, in the same batch
  when there is room) or when the batch is full (it goes on in the next batch).

So a tenant with a single row waits behind at most one batch of another tenant's rows,
whatever that tenant queued, and over many batches each tenant gets rows in proportion to
its weight. With a single tenant (or none: authentication off) this is the FIFO it
replaces, with the same merging of compatible requests.

When the batcher's queue is full, an arriving request of a tenant holding less of it (by
requests per weight) than the longest lane pushes out that lane's newest request, which is
refused (OVERLOADED) instead of the newcomer: a flooding tenant cannot fill the queue and
lock the others out (the longest-queue drop of fair queueing).

Not thread-safe: the batcher uses it from the event loop only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

__all__ = ["FairQueue", "Queued"]


class Queued(Protocol):
    """What the queue reads of a waiting request."""

    @property
    def tenant(self) -> str | None: ...

    @property
    def weight(self) -> float: ...

    @property
    def rows(self) -> int: ...

    @property
    def key(self) -> Hashable: ...

    @property
    def enqueued_ns(self) -> int: ...


T = TypeVar("T", bound=Queued)


class FairQueue(Generic[T]):
    """Lanes per tenant and their round; ``len`` is the number of waiting requests."""

    def __init__(self) -> None:
        self._lanes: dict[str | None, deque[T]] = {}
        self._weights: dict[str | None, float] = {}
        self._deficit: dict[str | None, float] = {}
        #: the tenants with waiting requests, the one whose turn it is first
        self._ring: deque[str | None] = deque()
        #: whether the tenant first in the ring has had its credit for this turn
        self._credited = False
        self._heaviest = 0.0
        self._size = 0
        #: rows waiting (the batcher's delay timer reads it)
        self.rows = 0

    def __len__(self) -> int:
        return self._size

    def push(self, item: T) -> None:
        tenant = item.tenant
        lane = self._lanes.get(tenant)
        if lane is None:
            lane = self._lanes[tenant] = deque()
            self._deficit[tenant] = 0.0
            self._ring.append(tenant)
        lane.append(item)
        weight = item.weight
        self._weights[tenant] = weight
        if weight > self._heaviest:
            self._heaviest = weight
        self._size += 1
        self.rows += item.rows

    def oldest_ns(self) -> int:
        """When the oldest waiting request arrived (O(tenants waiting))."""
        return min(lane[0].enqueued_ns for lane in self._lanes.values())

    def take(self, limit: int, dropped: Callable[[T], bool]) -> list[T]:
        """The next batch: at most ``limit`` rows of one shape, by the round. Requests for
        which ``dropped`` answers True (no one waits for them any more) are removed unrun."""
        batch: list[T] = []
        rows = 0
        key: Hashable = None
        idle_turns = 0  # turns in a row that took nothing
        ring = self._ring
        while ring and rows < limit:
            tenant = ring[0]
            lane = self._lanes[tenant]
            if not self._credited:
                quantum = max(1.0, limit * self._weights[tenant] / self._heaviest)
                self._deficit[tenant] = min(self._deficit[tenant] + quantum, float(limit))
                self._credited = True
            deficit = self._deficit[tenant]
            skipped: list[T] = []
            took = False
            out_of_credit = False
            while lane and rows < limit:
                item = lane[0]
                if dropped(item):
                    lane.popleft()
                    self._forget(item)
                    continue
                if batch and (item.key != key or rows + item.rows > limit):
                    skipped.append(lane.popleft())  # not mergeable here: stays for later
                    continue
                if item.rows > deficit:
                    out_of_credit = True
                    break
                lane.popleft()
                self._forget(item)
                deficit -= item.rows
                if not batch:
                    key = item.key
                batch.append(item)
                rows += item.rows
                took = True
            lane.extendleft(reversed(skipped))
            self._deficit[tenant] = deficit
            if not lane:
                self._retire(tenant)
            elif rows >= limit and not out_of_credit:  # full: the turn goes on next batch
                break
            else:  # out of credit, or nothing more fits: the next tenant's turn begins
                ring.rotate(-1)
                self._credited = False
            idle_turns = 0 if took else idle_turns + 1
            if batch and idle_turns >= len(ring):  # a whole round added nothing
                break
        return batch

    def push_out(self, tenant: str | None, weight: float) -> T | None:
        """Make room for a request of ``tenant``: the newest request of the lane holding
        most per weight, when that is more than ``tenant`` would hold with it (None: no
        lane holds more; the newcomer is the one to refuse). O(tenants waiting)."""
        own = self._lanes.get(tenant)
        mine = ((len(own) if own is not None else 0) + 1) / weight
        longest: str | None = None
        most = mine
        for other, lane in self._lanes.items():
            held = len(lane) / self._weights[other]
            if held > most:
                longest, most = other, held
        if most <= mine:
            return None
        lane = self._lanes[longest]
        item = lane.pop()
        self._forget(item)
        if not lane:
            self._retire(longest)
        return item

    def drain(self) -> list[T]:
        """Every waiting request, removed."""
        items = [item for lane in self._lanes.values() for item in lane]
        for tenant in list(self._lanes):
            self._lanes[tenant].clear()
            self._retire(tenant)
        self._size = self.rows = 0
        return items

    def _forget(self, item: T) -> None:
        self._size -= 1
        self.rows -= item.rows

    def _retire(self, tenant: str | None) -> None:
        """An empty lane leaves the round, its credit with it (as DRR does)."""
        if self._ring[0] == tenant:
            self._ring.popleft()
            self._credited = False
        else:
            self._ring.remove(tenant)
        del self._lanes[tenant], self._deficit[tenant]
        weight = self._weights.pop(tenant)
        if weight >= self._heaviest:
            self._heaviest = max(self._weights.values(), default=0.0)
