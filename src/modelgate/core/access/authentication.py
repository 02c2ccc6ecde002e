"""Authentication: a presented credential becomes a :class:`Principal`, or UNAUTHENTICATED.

API keys are looked up by their public prefix and checked in constant time against the
stored hash. Answers are cached per replica for ``cache_ttl_s`` seconds, so the store is not
asked on every request; a revocation therefore takes effect on every replica within that
time. Unknown prefixes are cached too (for a shorter time), so guessing keys cannot turn
into a flood of store look-ups.

The life of a known key's cache entry, from the look-up that filled it:

- up to 75% of the TTL, requests are answered from it;
- up to the TTL, too, and the first request also starts one refresh in the background
  (refresh ahead), which replaces the entry when the store answers;
- after the TTL, a request waits for the store; if the store fails, the entry answers for
  it up to ``stale_if_error_s`` past the TTL (stale-if-error, below).

A key in use is therefore refreshed before it expires and never waits for the store (on a
hit, the only cost is one float comparison). The entry holds what every request with the key
needs, made once per look-up: the stored hash as bytes and the :class:`Principal` itself (an
immutable value, shared by the key's requests). A refresh that finds the key, its tenant and
plan unchanged keeps the same ``Principal`` object, so what admission and quotas work out per
plan is found again by identity rather than by comparing the plan field by field. A request
then costs the SHA-256 of the key it presents and one constant-time comparison; the wall
clock is read only for a key with a revocation or expiry time. The presented key is never
cached, in clear or otherwise: only the hash the store already holds. A key is looked up
once at a time: every request that needs the store waits for that one look-up, and at
most ``_REFRESH_LIMIT`` refreshes run in the background at once.

Stale-if-error: when the store fails (UNAVAILABLE, or no answer within ``lookup_timeout_s``)
a key whose last answer said it was valid keeps working up to ``stale_if_error_s`` after its
entry expired. Never a key the store said was unknown, revoked or expired, or whose tenant
was disabled or gone; revocation and expiry times are checked again at use time. After a
failure, expired entries are served without waiting for the store for the retry interval
plus the look-up timeout (about 3 s), and each try renews that while the outage lasts; the
background refreshes try again once a second. One warning is logged per outage (no key
material). When the store answers, its answer wins: a revocation reaches every replica
within the TTL, and within about 3 s of the store answering again after an outage.

Bearer tokens (JWTs) are checked by a :class:`~modelgate.core.access.ports.TokenVerifier`
(signature, issuer, audience, expiry) and run as the tenant their claims name, with their
scopes and that tenant's plan.

The bootstrap admin key (``MODELGATE_ADMIN_KEY``) is a principal with every scope, for the
first start, before any tenant exists.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from modelgate.core.access.identity import ApiKeyRecord, Plan, Principal, Scope, Tenant
from modelgate.core.access.keys import key_digest, key_prefix
from modelgate.core.access.ports import IdentityStore, TokenVerifier
from modelgate.errors import ErrorKind, ModelgateError

__all__ = [
    "ADMIN_TENANT",
    "Authenticator",
]

ADMIN_TENANT = "*"
_ALL_SCOPES = frozenset(scope.value for scope in Scope)
_UNLIMITED = Plan(name="unlimited")
_BOOTSTRAP_ADMIN = Principal(ADMIN_TENANT, "bootstrap-admin", _ALL_SCOPES, _UNLIMITED, "admin")
_MISS_TTL_S = 2.0
_CACHE_LIMIT = 100_000
#: a known key's entry is refreshed in the background once this share of its TTL has passed
_REFRESH_AHEAD = 0.75
#: background refreshes at once (a request past its entry's TTL is never held back by this)
_REFRESH_LIMIT = 16
#: while the store fails, background refreshes of every key wait this long between tries
_RETRY_S = 1.0

log = logging.getLogger("modelgate.access")


def _unauthenticated(message: str) -> ModelgateError:
    return ModelgateError(ErrorKind.UNAUTHENTICATED, message)


@dataclass(frozen=True, slots=True)
class _Entry:
    record: ApiKeyRecord | None
    tenant: Tenant | None
    plan: Plan | None
    #: from here on a request that uses the entry starts a background refresh
    refresh_at: float
    #: from here on a request waits for the store
    until: float
    #: up to here the entry may stand in for a store that fails (a miss: ``until``)
    stale_until: float
    #: the stored SHA-256 as bytes (None: a miss, or a stored hash that is not one)
    digest: bytes | None = None
    #: what the key authenticates as, while it is valid (None: a miss, or no tenant or plan)
    principal: Principal | None = None


class Authenticator:
    def __init__(
        self,
        store: IdentityStore,
        *,
        admin_key: str | None = None,
        tokens: TokenVerifier | None = None,
        cache_ttl_s: float = 5.0,
        stale_if_error_s: float = 0.0,
        lookup_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self._store = store
        self._admin_key = admin_key
        self._tokens = tokens
        self._ttl = cache_ttl_s
        #: a known key's entry stands in for a failing store this long after it expired
        self._stale_s = stale_if_error_s
        #: a key not in the cache waits at most this long for the store (UNAVAILABLE after)
        self._lookup_timeout_s = lookup_timeout_s
        self._clock = clock
        self._now = now
        self._cache: dict[str, _Entry] = {}
        #: one store look-up per key at a time: when a busy key's entry expires, every
        #: request in flight with it waits for that one instead of querying the store too
        self._fetching: dict[str, asyncio.Task[_Entry]] = {}
        self._refreshing: set[asyncio.Task[_Entry]] = set()
        #: bumped by :meth:`forget`: a look-up that began before it does not fill the cache
        self._epoch = 0
        #: after a look-up failed (0.0 once one succeeds): background refreshes wait until
        #: ``_retry_at``; until ``_down_until`` an expired entry is served without waiting for
        #: the store (long enough for the next try's answer or timeout to renew it)
        self._retry_at = 0.0
        self._down_until = 0.0
        #: requests answered from an expired entry in this outage (0: none, nothing logged)
        self._stale_served = 0

    async def authenticate(self, credential: str | None) -> Principal:
        """The principal for ``credential`` (an API key); UNAUTHENTICATED otherwise."""
        if not credential:
            raise _unauthenticated("an API key is required (Authorization: Bearer <key>)")
        if self._admin_key and hmac.compare_digest(credential, self._admin_key):
            return _BOOTSTRAP_ADMIN
        if self._tokens is not None and self._tokens.claims(credential):
            return await self._token_principal(credential)
        prefix = key_prefix(credential)
        if prefix is None:
            raise _unauthenticated("the API key is malformed")
        entry = self._cached(prefix) or await self._lookup(prefix)
        if entry.digest is None or not hmac.compare_digest(key_digest(credential), entry.digest):
            raise _unauthenticated("the API key is not valid")
        principal = entry.principal
        record = entry.record
        assert record is not None  # a digest comes with a record
        if record.revoked_at is not None or record.expires_at is not None:
            now = self._now()
            if record.revoked_at is not None and record.revoked_at <= now:
                raise _unauthenticated("the API key has been revoked")
            if record.expires_at is not None and record.expires_at <= now:
                raise _unauthenticated("the API key has expired")
        tenant = entry.tenant
        if principal is None or tenant is None:
            raise _unauthenticated("the API key's tenant no longer exists")
        if tenant.disabled:
            raise ModelgateError(ErrorKind.PERMISSION_DENIED, "the tenant is disabled")
        return principal

    async def _token_principal(self, token: str) -> Principal:
        assert self._tokens is not None
        identity = await self._tokens.verify(token)
        tenant = await self._store.get_tenant(identity.tenant_id)
        plan = await self._store.get_plan(tenant.plan) if tenant else None
        if tenant is None or plan is None:
            raise _unauthenticated("the token names a tenant that does not exist")
        if tenant.disabled:
            raise ModelgateError(ErrorKind.PERMISSION_DENIED, "the tenant is disabled")
        return Principal(tenant.id, identity.subject, identity.scopes, plan, "jwt")

    async def _fetch(self, prefix: str) -> tuple[ApiKeyRecord | None, Tenant | None, Plan | None]:
        """The key, its tenant and plan from the store (UNAVAILABLE when it is down)."""
        record = await self._store.find_key(prefix)
        tenant = await self._store.get_tenant(record.tenant_id) if record else None
        plan = await self._store.get_plan(tenant.plan) if tenant else None
        return record, tenant, plan

    def forget(self, prefix: str) -> None:
        """Drop a cached key at once (this replica), e.g. right after revoking it here."""
        self._cache.pop(prefix, None)
        # a look-up in flight may have read the key before the change: it fills no cache
        self._epoch += 1
        self._fetching.pop(prefix, None)

    def _cached(self, prefix: str) -> _Entry | None:
        """The key's entry while it needs no refresh (the hot path: no coroutine)."""
        entry = self._cache.get(prefix)
        if entry is not None and entry.refresh_at > self._clock():
            return entry
        return None

    async def _lookup(self, prefix: str) -> _Entry:
        entry = self._cache.get(prefix)
        if entry is not None:
            now = self._clock()
            if entry.refresh_at > now:  # the hot path: one comparison
                return entry
            if entry.until > now:
                self._refresh_ahead(prefix, now)
                return entry
            if self._down_until > now and self._may_stand_in(entry, now):
                self._refresh_ahead(prefix, now)
                return self._stale(entry)
        fetching = self._fetching.get(prefix)
        if fetching is None:
            fetching = self._start_fetch(prefix)
        try:
            # shielded: a caller that goes away does not cancel the look-up the others wait for
            return await asyncio.shield(fetching)
        except ModelgateError as exc:
            if (
                exc.kind is not ErrorKind.UNAVAILABLE
                or entry is None
                or self._cache.get(prefix) is not entry  # forgotten or replaced meanwhile
                or not self._may_stand_in(entry, self._clock())
            ):
                raise
            return self._stale(entry)

    def _start_fetch(self, prefix: str) -> asyncio.Task[_Entry]:
        fetching = asyncio.ensure_future(self._refresh(prefix))
        self._fetching[prefix] = fetching
        fetching.add_done_callback(lambda done: self._settled(prefix, done))
        return fetching

    def _refresh_ahead(self, prefix: str, now: float) -> None:
        """One background look-up of a key in use, unless one is under way, too many are,
        or the store failed less than ``_RETRY_S`` ago."""
        if (
            prefix in self._fetching
            or len(self._refreshing) >= _REFRESH_LIMIT
            or self._retry_at > now
        ):
            return
        if self._down_until > now:  # a retry in an outage: its answer or timeout decides
            self._down_until = max(self._down_until, now + self._lookup_timeout_s + _RETRY_S)
        refreshing = self._start_fetch(prefix)
        self._refreshing.add(refreshing)
        refreshing.add_done_callback(self._refreshing.discard)

    def _may_stand_in(self, entry: _Entry, now: float) -> bool:
        """Whether ``entry`` may answer for a failing store: within its stale window, and the
        key was valid when last seen and still is (revocation and expiry at use time)."""
        record, tenant = entry.record, entry.tenant
        if (
            entry.stale_until <= now
            or record is None
            or tenant is None
            or tenant.disabled
            or entry.plan is None
        ):
            return False
        at = self._now()
        return (record.revoked_at is None or record.revoked_at > at) and (
            record.expires_at is None or record.expires_at > at
        )

    def _stale(self, entry: _Entry) -> _Entry:
        if not self._stale_served:
            log.warning(
                "the key store is unavailable: known keys are served from this replica's "
                "cache for up to %.0f s after their entry expired",
                self._stale_s,
            )
        self._stale_served += 1
        return entry

    def _settled(self, prefix: str, done: asyncio.Task[_Entry]) -> None:
        if self._fetching.get(prefix) is done:
            del self._fetching[prefix]
        if not done.cancelled():
            done.exception()  # retrieved: every waiter got it, or none was left to

    async def _refresh(self, prefix: str) -> _Entry:
        """The key's entry from the store, cached for the TTL (a miss for less)."""
        now = self._clock()
        epoch = self._epoch
        try:
            record, tenant, plan = await asyncio.wait_for(
                self._fetch(prefix), self._lookup_timeout_s
            )
        except TimeoutError:
            self._failed()
            raise ModelgateError(
                ErrorKind.UNAVAILABLE, "the key store did not answer in time", retry_after=1.0
            ) from None
        except ModelgateError as exc:
            if exc.kind is ErrorKind.UNAVAILABLE:
                self._failed()
            raise
        self._answered()
        if record is not None:
            principal = _principal_of(record, tenant, plan)
            previous = self._cache.get(prefix)
            if principal is not None and previous is not None and previous.principal == principal:
                # unchanged: the same objects as before, so that what admission and quotas
                # keep per plan is found by identity, not by comparing every field of the
                # plan on each request after every refresh
                principal, plan = previous.principal, previous.plan
            entry = _Entry(
                record,
                tenant,
                plan,
                now + self._ttl * _REFRESH_AHEAD,
                now + self._ttl,
                now + self._ttl + self._stale_s,
                _digest_of(record.key_hash),
                principal,
            )
        else:
            until = now + min(self._ttl, _MISS_TTL_S)
            entry = _Entry(None, tenant, plan, until, until, until)
        if epoch != self._epoch:  # forgotten meanwhile: this answer may predate the change
            return entry
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache = {k: v for k, v in self._cache.items() if v.stale_until > now}
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
        self._cache[prefix] = entry
        return entry

    def _failed(self) -> None:
        now = self._clock()
        self._retry_at = now + _RETRY_S
        self._down_until = now + _RETRY_S + self._lookup_timeout_s

    def _answered(self) -> None:
        if self._stale_served:
            log.info(
                "the key store answers again (%d requests were served from expired entries)",
                self._stale_served,
            )
        self._retry_at = self._down_until = 0.0
        self._stale_served = 0


def _digest_of(key_hash: str) -> bytes | None:
    """The stored hex SHA-256 as bytes; None when it is not one (such a key never matches,
    as a hex comparison would not)."""
    if len(key_hash) != 64 or key_hash != key_hash.lower():
        return None
    try:
        return bytes.fromhex(key_hash)
    except ValueError:
        return None


def _principal_of(
    record: ApiKeyRecord, tenant: Tenant | None, plan: Plan | None
) -> Principal | None:
    """What ``record`` authenticates as (None without its tenant or plan): made once per
    look-up, as every request with the key would make the same one."""
    if tenant is None or plan is None:
        return None
    rate = (
        (record.requests_per_second, record.burst)
        if record.requests_per_second is not None
        else None
    )
    return Principal(tenant.id, record.id, frozenset(record.scopes), plan, "key", key_rate=rate)
