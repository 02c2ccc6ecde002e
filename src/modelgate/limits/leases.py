"""``LeasingRateLimiter``: a rate limit shared by replicas without a Redis round trip per
request. Each replica takes a *lease* of tokens from the shared GCRA bucket in one atomic
call (:class:`TokenLeases`, in Redis :mod:`modelgate.storage.redis.leases`) and spends
them locally, the way Envoy's global rate limiting and Google's Doorman hand out capacity.

Per key (and limit and window) a replica holds one lease:

- its size is ``L = min(floor(limit * share), floor(limit / window_s * lease_s))``: a
  share of the burst, and no more than the bucket refills in ``lease_s``. Below 2 tokens
  leasing buys nothing and every hit is one round trip, as without leases (``share = 0``
  turns leasing off for every key);
- when a hit leaves fewer than ``L / 2`` tokens, a new lease of ``L`` is taken in the
  background (one at a time per key), so steady traffic never waits on Redis;
- a hit that finds no token waits for the lease in flight, or takes one itself, asking for
  at least its own cost: it is refused only when Redis answers that the bucket has fewer
  tokens than that. The local view never refuses on its own;
- tokens not spent within ``lease_s`` of their lease expire, and so do all of them when a
  background lease fails (the next hit then asks Redis, and an outage is seen by
  :class:`~modelgate.limits.resilient.FallbackRateLimiter` as before). Tokens are never
  given back to the bucket: it refills only with time, so a refusal Redis gave still holds
  for its ``retry_after`` (what the refusal memo notes).

**The error bound.** A replica holds fewer than ``1.5 L`` tokens at any time. Tokens are
taken from the shared bucket before they are spent, so with ``R`` replicas the requests
admitted in any interval ``[a, b]`` are at most what the bucket grants in it
(``limit + rate * (b - a)``) plus what was held at ``a``: **at most ``R * 1.5 L`` over the
limit**, i.e. ``R * 1.5 * share`` of the burst. The other way, a replica refused by Redis
may be refused while other replicas hold up to ``(R - 1) * 1.5 L`` unspent tokens (until
they spend them or their lease expires). With the default share (0.01) two replicas stay
within 3% of one limit.

The ``Decision`` of a hit served from a lease is this replica's view (Redis's backlog at
the last lease, counted down, plus the tokens held here): ``remaining`` and
``reset_after_s`` are approximate; ``allowed`` and a refusal's ``retry_after_s`` are not.

Memory is bounded by ``max_keys`` (the oldest lease is forgotten, with its tokens).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from modelgate.core.admission.ports import Decision
from modelgate.limits import gcra

__all__ = ["Grant", "LeasingRateLimiter", "TokenLeases", "check_lease_settings", "lease_size"]


@dataclass(frozen=True, slots=True)
class Grant:
    #: tokens taken; 0: refused (the bucket held fewer than were needed), nothing taken
    tokens: int
    #: the bucket's backlog in seconds after the take (the one found, if refused)
    backlog_s: float


class TokenLeases(Protocol):
    """A shared GCRA bucket that hands out tokens in bulk, and answers single hits.

    ``take(key, limit, window_s, want, need)``: atomically take as many whole tokens as the
    bucket ``key`` holds, at most ``want``; none when fewer than ``need`` are left. The
    bucket is the one ``hit`` uses (the same arithmetic as
    :class:`~modelgate.core.admission.ports.RateLimiter`). A store failure is
    ``ModelgateError(UNAVAILABLE)``."""

    async def take(self, key: str, limit: int, window_s: float, want: int, need: int) -> Grant: ...

    async def hit(self, key: str, limit: int, window_s: float, cost: int = 1) -> Decision: ...

    async def close(self) -> None: ...


def check_lease_settings(share: float, lease_s: float, max_keys: int) -> None:
    """ValueError unless ``0 <= share <= 0.5``, ``lease_s > 0`` and ``max_keys >= 1`` (the
    rate-limit and the quota leases take the same three)."""
    if not 0 <= share <= 0.5:
        raise ValueError(f"share must be in [0, 0.5], not {share}")
    if not lease_s > 0:
        raise ValueError(f"lease_s must be positive, not {lease_s}")
    if max_keys < 1:
        raise ValueError(f"max_keys must be at least 1, not {max_keys}")


def lease_size(limit: int, window_s: float, *, share: float, lease_s: float) -> int:
    """How many tokens one lease takes: a ``share`` of the burst, and no more than the
    bucket refills in ``lease_s``."""
    return min(math.floor(limit * share), math.floor(limit / window_s * lease_s))


class _Lease:
    __slots__ = (
        "backlog_s",
        "emission_s",
        "expires_at",
        "low",
        "pending",
        "seen_at",
        "size",
        "tokens",
    )

    def __init__(self, size: int, emission_s: float) -> None:
        #: the lease's size (:func:`lease_size`, fixed by the key's limit and window), the
        #: tokens under which the next one is taken, and the bucket's emission interval
        self.size = size
        self.low = size // 2
        self.emission_s = emission_s
        self.tokens = 0
        self.expires_at = 0.0
        #: the lease being taken now (one at a time): its grant and when it was asked
        self.pending: asyncio.Task[tuple[Grant, float]] | None = None
        #: the bucket's backlog at the last grant, and when (this replica's view of it)
        self.backlog_s = 0.0
        self.seen_at = 0.0


_Key = tuple[str, int, float]


class LeasingRateLimiter:
    """A :class:`~modelgate.core.admission.ports.RateLimiter` that spends tokens leased from
    ``source`` (see the module's docstring for the rules and the error bound). ``clock``
    must run at the rate of the source's clock. ``close`` stops the leases in flight and
    closes ``source``."""

    def __init__(
        self,
        source: TokenLeases,
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
        self._leases: dict[_Key, _Lease] = {}
        self._tasks: set[asyncio.Task[tuple[Grant, float]]] = set()

    def held(self, key: str, limit: int, window_s: float) -> int:
        """Tokens this replica holds for the bucket (expired ones included until a hit)."""
        lease = self._leases.get((key, limit, window_s))
        return 0 if lease is None else lease.tokens

    async def hit(self, key: str, limit: int, window_s: float, cost: int = 1) -> Decision:
        k = (key, limit, window_s)
        lease = self._leases.get(k)
        if lease is None:
            gcra.check_arguments(limit, window_s, cost)
            size = lease_size(limit, window_s, share=self._share, lease_s=self._lease_s)
            if size < 2:
                return await self._source.hit(key, limit, window_s, cost)
            if len(self._leases) >= self._max_keys:
                del self._leases[next(iter(self._leases))]
            lease = self._leases[k] = _Lease(size, window_s / limit)
        elif not 0 <= cost <= limit:  # the key's limit and window were checked with its lease
            gcra.check_arguments(limit, window_s, cost)
        # one clock read for a hit served from the lease: it is the hit's start and its now
        now = started = self._clock()
        while True:
            if now >= lease.expires_at:
                lease.tokens = 0
            if lease.tokens >= cost:
                lease.tokens -= cost
                if lease.tokens < lease.low and lease.pending is None:
                    self._take(k, lease, lease.size, 1)
                return self._served(lease, limit, window_s, cost, now)
            pending = lease.pending
            own = pending is None
            if pending is None:
                pending = self._take(k, lease, max(lease.size, cost), cost)
            grant, asked_at = await asyncio.shield(pending)
            now = self._clock()
            if grant.tokens or lease.tokens >= cost:
                continue  # spend from it (or, if others did first, ask again)
            # refused: the bucket held fewer than ``need`` tokens when Redis ran the take,
            # at or after asked_at. Nothing but time gives a bucket tokens, so at this hit's
            # start its backlog was at least the one found less the time since asked_at:
            # if this hit's cost does not fit even that, the refusal holds for it, and the
            # retry time counted from its start is never later than the bucket's
            backlog = max(grant.backlog_s - max(started - asked_at, 0.0), 0.0)
            if own or gcra.admit(backlog, limit, window_s, cost) is None:
                return gcra.decide(
                    allowed=False, backlog_s=backlog, limit=limit, window_s=window_s, cost=cost
                )
            # a lease asked before this hit started (or for more) was refused: ask ourselves

    def _take(
        self, k: _Key, lease: _Lease, want: int, need: int
    ) -> asyncio.Task[tuple[Grant, float]]:
        task = asyncio.get_running_loop().create_task(self._lease(k, lease, want, need))
        lease.pending = task
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._settled(done, lease))
        return task

    def _settled(self, task: asyncio.Task[tuple[Grant, float]], lease: _Lease) -> None:
        self._tasks.discard(task)
        if lease.pending is task:  # cancelled before it ran
            lease.pending = None
        if not task.cancelled():
            task.exception()  # a background lease's failure: seen by the next hit instead

    async def _lease(self, k: _Key, lease: _Lease, want: int, need: int) -> tuple[Grant, float]:
        key, limit, window_s = k
        asked_at = self._clock()
        try:
            grant = await self._source.take(key, limit, window_s, want, need)
        except BaseException:
            lease.tokens = 0  # the store is failing: the next hit asks it (and falls back)
            raise
        finally:
            lease.pending = None
        if grant.tokens:
            lease.tokens += grant.tokens
            lease.expires_at = asked_at + self._lease_s
        lease.backlog_s = grant.backlog_s
        lease.seen_at = asked_at
        return grant, asked_at

    def _served(
        self, lease: _Lease, limit: int, window_s: float, cost: int, now: float
    ) -> Decision:
        backlog = lease.backlog_s - (now - lease.seen_at) - lease.tokens * lease.emission_s
        if backlog < 0.0:
            backlog = 0.0
        return gcra.decide(
            allowed=True, backlog_s=backlog, limit=limit, window_s=window_s, cost=cost
        )

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._source.close()
