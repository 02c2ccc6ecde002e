"""Abuse throttling: a caller that keeps sending requests that fail is slowed, then blocked.

Two kinds of subject are counted, each in fixed windows of ``window_s`` seconds:

- a **key** (``key:<tenant>:<subject>``, an API key or a token's subject): answers of the
  kinds in :data:`COUNTED` -- malformed input, denied scopes, unknown models, bodies over
  the limit, unsupported features -- the mistakes and probing of a client, never the
  server's own state (rate limits, overload, unavailable models, internal errors). Past
  ``slow_after`` of them in a window each further failure is answered after a delay that
  grows with the count; at ``block_after`` the key is blocked for ``block_s`` seconds.
- a client **address** (``ip:<address>``; IPv6 counted per /64, the block a single client
  usually holds): refused and missing credentials (UNAUTHENTICATED) where one is needed. Past
  ``slow_after`` they are slowed alike; at ``auth_failures_per_address`` the address is
  blocked, and while blocked it is refused (RATE_LIMITED) before any credential it sends is
  looked up, a valid one included.

The counts live in a :class:`~modelgate.core.admission.ports.StrikeStore` (in memory, or in
Redis so every replica shares them). The hot path of valid traffic never waits on the store: a
subject found not blocked is trusted for ``recheck_s`` seconds (a dictionary lookup per
request), so a block set by another replica takes effect here within about that time; a block
set here takes effect at once. The guard never fails a request because of its store: a store
error is logged and the request goes on as if the subject were not blocked.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from modelgate.core.access.authentication import Authenticator
from modelgate.core.access.identity import Principal
from modelgate.core.admission.ports import StrikeStore
from modelgate.core.serving.ports import InferenceObserver
from modelgate.errors import ErrorKind, ModelgateError

__all__ = [
    "COUNTED",
    "AbuseGuard",
    "AbusePolicy",
    "address_subject",
    "key_subject",
]

log = logging.getLogger("modelgate.abuse")

#: the answers that count against a key: what a client got wrong, or probed for
COUNTED = frozenset(
    {
        ErrorKind.INVALID_ARGUMENT,
        ErrorKind.PERMISSION_DENIED,
        ErrorKind.NOT_FOUND,
        ErrorKind.PAYLOAD_TOO_LARGE,
        ErrorKind.UNSUPPORTED,
    }
)

_ADDRESS = "ip:"
_KEY = "key:"


@dataclass(frozen=True, slots=True)
class AbusePolicy:
    """The thresholds; ``settings.abuse_*`` in the server."""

    window_s: float = 60.0
    #: failures in a window before answers are slowed (keys and addresses)
    slow_after: int = 20
    #: a key's failures in a window before it is blocked
    block_after: int = 50
    block_s: float = 300.0
    #: refused credentials from one address in a window before it is blocked
    auth_failures_per_address: int = 30
    #: the longest delay, reached at the blocking failure
    max_delay_s: float = 2.0

    def limit_for(self, subject: str) -> int:
        """The failures in a window at which ``subject`` is blocked."""
        return self.auth_failures_per_address if subject.startswith(_ADDRESS) else self.block_after

    def delay(self, strikes: int, limit: int) -> float:
        """The delay before answering the ``strikes``-th failure of a subject blocked at
        ``limit``: none up to ``slow_after``, then growing linearly to ``max_delay_s`` at
        ``limit``."""
        if strikes <= self.slow_after:
            return 0.0
        ramp = max(limit - self.slow_after, 1)
        return min(self.max_delay_s * (strikes - self.slow_after) / ramp, self.max_delay_s)


def key_subject(principal: Principal) -> str:
    """The subject a principal's failures count under (an API key, a token's subject)."""
    return f"{_KEY}{principal.tenant_id}:{principal.subject}"


@functools.lru_cache(maxsize=4096)
def address_subject(host: str) -> str:
    """The subject of a client address: the IPv4 address, or the /64 of an IPv6 one (a
    client usually holds a whole /64 and could rotate through it); other names as given."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return _ADDRESS + host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return _ADDRESS + str(address.ipv4_mapped)
        return _ADDRESS + str(ipaddress.IPv6Network((address, 64), strict=False))
    return _ADDRESS + str(address)


class AbuseGuard:
    """Counts failures per subject in ``store`` and answers blocked subjects RATE_LIMITED.

    Adapters call :meth:`authenticate` instead of ``Authenticator.authenticate`` (the
    address check, the count of refused credentials and the key check in one place) and
    :meth:`penalize` with the error of every failed request before answering it.

    ``policy`` may be replaced at run time. ``sleep`` is how delays are waited (tests inject
    their own); ``recheck_s`` how long a subject found not blocked is trusted locally.
    """

    def __init__(
        self,
        store: StrikeStore,
        policy: AbusePolicy = AbusePolicy(),
        *,
        recheck_s: float = 1.0,
        max_cached: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        observer: InferenceObserver | None = None,
    ) -> None:
        self.policy = policy
        #: told of each block set here (metrics)
        self.observer = observer
        self._store = store
        self._recheck_s = recheck_s
        self._max_cached = max_cached
        self._clock = clock
        self._sleep = sleep
        # subject -> clock time until which it is known not to be blocked
        self._clear: dict[str, float] = {}
        # subject -> clock time its block ends
        self._blocked: dict[str, float] = {}
        #: the same, read-only by contract: whether any subject is (or was: a block past
        #: its end is forgotten when next looked at) blocked here, ``bool(guard.blocked)``
        self.blocked: Mapping[str, float] = self._blocked
        self._last_sweep = -math.inf
        self._store_failing = False

    async def check(self, subject: str) -> None:
        """Raise RATE_LIMITED (with ``retry_after``) while ``subject`` is blocked."""
        now = self._clock()
        if self._clear.get(subject, 0.0) > now:  # the hot path: one lookup
            return
        until = self._blocked.get(subject)
        if until is not None:
            if until > now:
                raise _blocked_error(subject, until - now)
            del self._blocked[subject]
        # Trusted at once, so that concurrent requests of this subject do not all wait
        # for the store; withdrawn below if the store says otherwise.
        self._remember(self._clear, subject, now + self._recheck_s)
        try:
            left = await self._store.blocked_for(subject)
        except ModelgateError as exc:
            self._store_failed(exc)
            return
        self._store_answered()
        if left > 0:
            self._block_locally(subject, now + left)
            raise _blocked_error(subject, left)

    async def failed(self, subject: str) -> float:
        """Count a failure of ``subject``; block it when it reaches its limit. Returns the
        seconds to wait before answering the failure (0.0 when not slowed)."""
        policy = self.policy
        limit = policy.limit_for(subject)
        try:
            strikes = await self._store.strike(subject, policy.window_s)
            if strikes >= limit:
                await self._store.block(subject, policy.block_s)
        except ModelgateError as exc:
            self._store_failed(exc)
            return 0.0
        self._store_answered()
        if strikes >= limit:
            self._block_locally(subject, self._clock() + policy.block_s)
            if strikes == limit:  # once per block, not per straggler
                if self.observer is not None:
                    self.observer.blocked("address" if subject.startswith(_ADDRESS) else "key")
                log.warning(
                    "%s blocked for %g s after %d failed requests in %g s",
                    subject,
                    policy.block_s,
                    strikes,
                    policy.window_s,
                )
        return policy.delay(strikes, limit)

    async def authenticate(
        self, authenticator: Authenticator, credential: str | None, address: str | None
    ) -> Principal:
        """``authenticator.authenticate(credential)`` for a client at ``address`` (a host,
        None when unknown), refused while the address or the key is blocked.

        A refused credential counts against the address, and the refusal is delayed as the
        count says. A missing one counts too: it guesses nothing, but a flood of requests
        without credentials would otherwise never be throttled."""
        # The hot path inlines check()'s first step: a subject known clear costs one lookup.
        now = self._clock()
        if address:
            subject = address_subject(address)
            if self._clear.get(subject, 0.0) <= now:
                await self.check(subject)
        try:
            principal = await authenticator.authenticate(credential)
        except ModelgateError as exc:
            if exc.kind is ErrorKind.UNAUTHENTICATED:
                await self.refused_credential(address)
            raise
        subject = key_subject(principal)
        if self._clear.get(subject, 0.0) <= now:
            await self.check(subject)
        return principal

    def known(self, principal: Principal, address: str | None) -> ModelgateError | bool:
        """What this process knows, without asking the store, of what :meth:`authenticate`
        would say of ``principal``'s key from ``address``: True, both known not blocked
        (trusted for ``recheck_s``); the RATE_LIMITED error it would raise, one of them
        known blocked; False, not known (only :meth:`authenticate` may tell). For an
        adapter that answers a known caller without authenticating it again."""
        now = self._clock()
        clear, blocked = self._clear, self._blocked
        for subject in (address_subject(address) if address else None, key_subject(principal)):
            if subject is None or clear.get(subject, 0.0) > now:
                continue
            until = blocked.get(subject)
            if until is None or until <= now:
                return False
            return _blocked_error(subject, until - now)
        return True

    async def check_principal(self, principal: Principal) -> None:
        """:meth:`check` for a principal's key."""
        await self.check(key_subject(principal))

    async def check_address(self, address: str | None) -> None:
        """:meth:`check` for a client address (a host; None: unknown, never blocked)."""
        if address:
            await self.check(address_subject(address))

    async def refused_credential(self, address: str | None) -> None:
        """Count a refused credential from ``address`` and wait the delay that asks for."""
        if address:
            await self._wait(await self.failed(address_subject(address)))

    async def penalize(self, principal: Principal | None, error: ModelgateError) -> None:
        """Count ``error`` against the principal's key if it is of a :data:`COUNTED` kind,
        and wait the delay that asks for; for any other error (or no principal) nothing."""
        if principal is None or error.kind not in COUNTED:
            return
        await self._wait(await self.failed(key_subject(principal)))

    async def close(self) -> None:
        await self._store.close()

    async def _wait(self, delay: float) -> None:
        if delay > 0:
            await self._sleep(delay)

    def _block_locally(self, subject: str, until: float) -> None:
        self._clear.pop(subject, None)
        self._remember(self._blocked, subject, until)

    def _remember(self, table: dict[str, float], subject: str, until: float) -> None:
        if len(table) >= self._max_cached and subject not in table:
            # Bounded: a sweep of the expired entries at most once per recheck_s, else the
            # oldest entry goes. Only a cache: the store still holds every block.
            now = self._clock()
            if now - self._last_sweep >= self._recheck_s:
                self._last_sweep = now
                for stale in [s for s, t in table.items() if t <= now]:
                    del table[stale]
            if len(table) >= self._max_cached:
                del table[next(iter(table))]
        table[subject] = until

    def _store_failed(self, exc: ModelgateError) -> None:
        if not self._store_failing:
            log.warning("abuse throttling degraded, strike store failed: %s", exc.message)
            self._store_failing = True

    def _store_answered(self) -> None:
        if self._store_failing:
            log.warning("abuse throttling recovered")
            self._store_failing = False


def _blocked_error(subject: str, left: float) -> ModelgateError:
    what = "this address is" if subject.startswith(_ADDRESS) else "this key is"
    return ModelgateError(
        ErrorKind.RATE_LIMITED,
        f"{what} blocked for {math.ceil(left)} s after repeated failed requests",
        retry_after=left,
    )
