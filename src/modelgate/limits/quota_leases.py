"""``LeasingQuotaCounter``: a tenant's quotas shared by replicas without a Redis round trip
per request. A replica *reserves* a slice of each counter a request adds to (a share of the
quota) in one atomic call (:class:`QuotaLeases`, in Redis
:mod:`modelgate.storage.redis.quota_leases`) and charges requests from it locally.

- A slice of ``floor(limit * share)`` units is added to the shared counter when reserved:
  the units ``[before, before + slice)`` are this replica's. Each request is charged from
  one slice, and answers the number of the last unit it took as the counter's ``used``, so
  every unit number is taken once across the cluster: a quota's 80% and 100% alerts are
  still sent exactly once.
- When a slice runs below half, the next one is reserved in the background (one at a time
  per set of counters); a request whose slice is empty reserves itself, and is refused only
  when Redis answers that the quota has too few units left. A refusal is certain: reserved
  units are never given back, so a counter only grows within its period.
- Counters a request only checks (a token quota is checked before the tokenizer runs, and
  its tokens are added after, exactly, with no slice) are read from the values seen at the
  last reservation, at most ``lease_s`` old: **a token quota's exhaustion reaches every
  replica within ``lease_s``**. A request that finds such a counter exhausted asks Redis.
- Calls without limits (tokens added after the fact, usage reports) go to Redis as before.

**Error bound.** Requests and rows never pass a quota: every unit charged was reserved
first. The other way, up to ``1.5 * share * limit`` units per replica are reserved and not
yet used: reports count them as used, a replica can be refused while others hold them, and
those a replica holds when it stops (or forgets under ``max_keys``) are lost for the
period. A quota too small for slices of 2 units is charged with one round trip per request.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from modelgate.core.admission.ports import QuotaCharge, QuotaResult
from modelgate.limits.leases import check_lease_settings
from modelgate.limits.quotas import check_charges

__all__ = ["LeasingQuotaCounter", "QuotaLeases", "Reservation", "Slice"]

#: at most this many slices are kept per counter (a request takes its units from one
#: slice, so rows leave fragments); the oldest fragment goes first
_MAX_SLICES = 4


@dataclass(frozen=True, slots=True)
class Slice:
    """What to reserve of one counter: up to ``want`` units, refused under ``need``;
    ``check``: refused when not one unit is left. ``charge`` gives the counter's key,
    limit, expiry and seed (its amount is not used)."""

    charge: QuotaCharge
    want: int
    need: int
    check: bool


@dataclass(frozen=True, slots=True)
class Reservation:
    #: the index of the first counter that refused (then nothing was reserved), or None
    refused: int | None
    #: each counter's value before the reservation
    before: tuple[int, ...]
    #: units reserved per counter (all 0 when refused)
    granted: tuple[int, ...]


class QuotaLeases(Protocol):
    """Shared quota counters that reserve slices. ``reserve(slices)``: all or nothing,
    atomically; None when a counter is missing and its charge has no seed (as
    :class:`~modelgate.core.admission.ports.QuotaCounter`). ``charge`` is that port's."""

    async def reserve(self, slices: Sequence[Slice]) -> Reservation | None: ...

    async def charge(self, charges: Sequence[QuotaCharge]) -> QuotaResult | None: ...

    async def close(self) -> None: ...


class _Slices:
    __slots__ = ("dry", "half", "held", "pending", "ranges", "seen_at", "sizes", "view")

    def __init__(self, sizes: list[int]) -> None:
        n = len(sizes)
        #: per counter, the units of a slice (fixed by the key's limit) and half of that
        self.sizes = sizes
        self.half = [size // 2 for size in sizes]
        #: per counter, its slices as [next unit, end], and the units they hold in all
        self.ranges: list[list[list[int]]] = [[] for _ in range(n)]
        self.held = [0] * n
        #: per counter, its value at the last reservation, and when that was asked
        self.view = [0] * n
        self.seen_at = -math.inf
        self.pending: asyncio.Task[Reservation | None] | None = None
        #: the last reservation got less than it wanted: the quota is nearly used up, so
        #: running low asks again only once the view is old (not on every charge)
        self.dry = False


_Key = tuple[tuple[str, int | None, bool], ...]

#: what ``_states`` holds for a set of counters charged with one round trip per call
_DIRECT = None


class LeasingQuotaCounter:
    """A :class:`~modelgate.core.admission.ports.QuotaCounter` that charges from slices
    reserved in ``source`` (the module's docstring has the rules and the bound)."""

    def __init__(
        self,
        source: QuotaLeases,
        *,
        share: float,
        lease_s: float,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_lease_settings(share, lease_s, max_keys)
        self._source = source
        self._share = share
        self._lease_s = lease_s
        self._max_keys = max_keys
        self._clock = clock
        #: per set of counters (keys, limits, and which ones are added to): its slices, or
        #: ``_DIRECT`` when slices buy nothing (a counter without a limit, or one whose
        #: slices would hold fewer than 2 units) and each call goes to ``source``
        self._states: dict[_Key, _Slices | None] = {}
        self._tasks: set[asyncio.Task[Reservation | None]] = set()

    async def charge(self, charges: Sequence[QuotaCharge]) -> QuotaResult | None:
        k = tuple([(c.key, c.limit, c.amount > 0) for c in charges])
        try:
            state = self._states[k]
        except KeyError:  # a set of counters not seen yet
            state = self._state(k, charges)
        if state is None:
            return await self._source.charge(charges)
        check_charges(charges)
        lease_s = self._lease_s
        while True:
            now = self._clock()
            age = now - state.seen_at
            if age < lease_s:
                used = _spend(state, charges)
                if used is not None:
                    if state.pending is None and (
                        age > lease_s / 2 or (not state.dry and _low(state, charges))
                    ):
                        self._reserve(state, charges, foreground=False)
                    return QuotaResult(True, used)
            pending = state.pending
            own = pending is None
            if pending is None:
                pending = self._reserve(state, charges, foreground=True)
            reservation = await asyncio.shield(pending)
            if reservation is None:
                if own:
                    return None  # a counter needs its seed: the caller finds it
                continue
            refused = reservation.refused
            if refused is not None:
                if own:
                    # the units this replica still holds of the refused counter are left to
                    # a smaller charge: not counted as used (so the refusal memo, which
                    # notes only a quota with nothing left, does not note this one)
                    seen = list(reservation.before)
                    seen[refused] -= state.held[refused]
                    return QuotaResult(False, tuple(seen), refused)
                continue  # another request's reservation was refused: ask for this one
            # reserved: charge from it (or, if other requests took it first, ask again)

    def _state(self, k: _Key, charges: Sequence[QuotaCharge]) -> _Slices | None:
        """The slices of a set of counters charged for the first time (or again, after
        ``max_keys`` others), or ``_DIRECT``."""
        share = self._share
        sizes = [0 if c.limit is None else math.floor(c.limit * share) for c in charges]
        pairs = zip(charges, sizes, strict=True)
        direct = any(c.limit is None or (c.amount > 0 and size < 2) for c, size in pairs)
        if len(self._states) >= self._max_keys:
            del self._states[next(iter(self._states))]
        state = self._states[k] = _DIRECT if direct else _Slices(sizes)
        return state

    def _reserve(
        self, state: _Slices, charges: Sequence[QuotaCharge], *, foreground: bool
    ) -> asyncio.Task[Reservation | None]:
        sizes = state.sizes
        slices = []
        for i, c in enumerate(charges):
            if c.amount == 0:
                slices.append(Slice(c, 0, 0, check=foreground))
                continue
            ranges = state.ranges[i]
            short = foreground and max((r[1] - r[0] for r in ranges), default=0) < c.amount
            low = state.held[i] < state.half[i]
            want = max(sizes[i], c.amount) if short or low else 0
            slices.append(Slice(c, want, c.amount if short else 0, check=False))
        task = asyncio.get_running_loop().create_task(self._take(state, slices))
        state.pending = task
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._settled(done, state))
        return task

    def _settled(self, task: asyncio.Task[Reservation | None], state: _Slices) -> None:
        self._tasks.discard(task)
        if state.pending is task:  # cancelled before it ran
            state.pending = None
        if not task.cancelled():
            task.exception()  # a background reservation's failure: seen by the next call

    async def _take(self, state: _Slices, slices: list[Slice]) -> Reservation | None:
        asked_at = self._clock()
        try:
            reservation = await self._source.reserve(slices)
        except BaseException:
            state.seen_at = -math.inf  # the store is failing: the next call asks it
            raise
        finally:
            state.pending = None
        if reservation is None:
            return None
        state.view = list(reservation.before)
        state.seen_at = asked_at
        state.dry = any(g < s.want for s, g in zip(slices, reservation.granted, strict=True))
        held = state.held
        for i, granted in enumerate(reservation.granted):
            if granted > 0:
                ranges = state.ranges[i]
                if len(ranges) >= _MAX_SLICES:
                    oldest = ranges.pop(0)
                    held[i] -= oldest[1] - oldest[0]
                ranges.append([reservation.before[i], reservation.before[i] + granted])
                held[i] += granted
        return reservation

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._source.close()


def _spend(state: _Slices, charges: Sequence[QuotaCharge]) -> tuple[int, ...] | None:
    """Charge every counter from its slices and answer the counters' values as seen by
    this charge, or None (nothing charged) when a slice or a checked counter falls short."""
    ranges, view = state.ranges, state.view
    picks: list[list[int] | None] = []
    for i, c in enumerate(charges):
        amount = c.amount
        if amount == 0:
            limit = c.limit
            if limit is not None and view[i] + 1 > limit:  # never None here: that is _DIRECT
                return None
            picks.append(None)
            continue
        for r in ranges[i]:
            if r[1] - r[0] >= amount:
                picks.append(r)
                break
        else:
            return None
    held = state.held
    used = []
    for i, pick in enumerate(picks):
        if pick is None:
            used.append(view[i])
            continue
        amount = charges[i].amount
        pick[0] += amount
        held[i] -= amount
        used.append(pick[0])  # the number of the last unit taken, unique in the cluster
        if pick[0] >= pick[1]:
            ranges[i].remove(pick)
    return tuple(used)


def _low(state: _Slices, charges: Sequence[QuotaCharge]) -> bool:
    """Whether a counter that is added to holds under half a slice."""
    held, half = state.held, state.half
    for i, c in enumerate(charges):  # noqa: SIM110 (any() over a generator costs more)
        if c.amount > 0 and held[i] < half[i]:
            return True
    return False
