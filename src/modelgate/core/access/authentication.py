"""Authentication: a presented credential becomes a :class:`Principal`, or UNAUTHENTICATED.

API keys are looked up by their public prefix and checked in constant time against the
stored hash. Answers are cached per replica for ``cache_ttl_s`` seconds, so the store is not
asked on every request; a revocation therefore takes effect on every replica within that
time. Unknown prefixes are cached too (for a shorter time), so guessing keys cannot turn
into a flood of store look-ups.

Bearer tokens (JWTs) are checked by a :class:`TokenVerifier` (signature, issuer, audience,
expiry) and run as the tenant their claims name, with their scopes and that tenant's plan.

The bootstrap admin key (``MODELGATE_ADMIN_KEY``) is a principal with every scope, for the
first start, before any tenant exists.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from modelgate.core.access.identity import (
    ApiKeyRecord,
    IdentityStore,
    Plan,
    Principal,
    Scope,
    Tenant,
)
from modelgate.core.access.keys import key_prefix, matches
from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["ADMIN_TENANT", "Authenticator", "TokenIdentity", "TokenVerifier"]

ADMIN_TENANT = "*"
_ALL_SCOPES = frozenset(scope.value for scope in Scope)
_UNLIMITED = Plan(name="unlimited")
_MISS_TTL_S = 2.0
_CACHE_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class TokenIdentity:
    tenant_id: str
    subject: str
    scopes: frozenset[str]


class TokenVerifier(Protocol):
    """Bearer tokens: ``claims(credential)`` says whether a credential is a token at all (an
    API key never is); ``verify`` checks it and returns who it speaks for, or raises
    UNAUTHENTICATED (never anything else)."""

    def claims(self, credential: str) -> bool: ...

    async def verify(self, token: str) -> TokenIdentity: ...


def _unauthenticated(message: str) -> ModelgateError:
    return ModelgateError(ErrorKind.UNAUTHENTICATED, message)


@dataclass(frozen=True, slots=True)
class _Entry:
    record: ApiKeyRecord | None
    tenant: Tenant | None
    plan: Plan | None
    until: float


class Authenticator:
    def __init__(
        self,
        store: IdentityStore,
        *,
        admin_key: str | None = None,
        tokens: TokenVerifier | None = None,
        cache_ttl_s: float = 5.0,
        lookup_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self._store = store
        self._admin_key = admin_key
        self._tokens = tokens
        self._ttl = cache_ttl_s
        #: a key not in the cache waits at most this long for the store (UNAVAILABLE after)
        self._lookup_timeout_s = lookup_timeout_s
        self._clock = clock
        self._now = now
        self._cache: dict[str, _Entry] = {}
        #: one store look-up per key at a time: when a busy key's entry expires, every
        #: request in flight with it waits for that one instead of querying the store too
        self._fetching: dict[str, asyncio.Task[_Entry]] = {}

    async def authenticate(self, credential: str | None) -> Principal:
        """The principal for ``credential`` (an API key); UNAUTHENTICATED otherwise."""
        if not credential:
            raise _unauthenticated("an API key is required (Authorization: Bearer <key>)")
        if self._admin_key and hmac.compare_digest(credential, self._admin_key):
            return Principal(ADMIN_TENANT, "bootstrap-admin", _ALL_SCOPES, _UNLIMITED, "admin")
        if self._tokens is not None and self._tokens.claims(credential):
            return await self._token_principal(credential)
        prefix = key_prefix(credential)
        if prefix is None:
            raise _unauthenticated("the API key is malformed")
        entry = await self._lookup(prefix)
        record, tenant, plan = entry.record, entry.tenant, entry.plan
        if record is None or not matches(credential, record.key_hash):
            raise _unauthenticated("the API key is not valid")
        now = self._now()
        if record.revoked_at is not None and record.revoked_at <= now:
            raise _unauthenticated("the API key has been revoked")
        if record.expires_at is not None and record.expires_at <= now:
            raise _unauthenticated("the API key has expired")
        if tenant is None or plan is None:
            raise _unauthenticated("the API key's tenant no longer exists")
        if tenant.disabled:
            raise ModelgateError(ErrorKind.PERMISSION_DENIED, "the tenant is disabled")
        rate = (
            (record.requests_per_second, record.burst)
            if record.requests_per_second is not None
            else None
        )
        return Principal(tenant.id, record.id, frozenset(record.scopes), plan, "key", key_rate=rate)

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

    async def _lookup(self, prefix: str) -> _Entry:
        entry = self._cache.get(prefix)
        if entry is not None and entry.until > self._clock():
            return entry
        fetching = self._fetching.get(prefix)
        if fetching is None:
            fetching = asyncio.ensure_future(self._refresh(prefix))
            self._fetching[prefix] = fetching
            fetching.add_done_callback(lambda done: self._settled(prefix, done))
        # shielded: a caller that goes away does not cancel the look-up the others wait for
        return await asyncio.shield(fetching)

    def _settled(self, prefix: str, done: asyncio.Task[_Entry]) -> None:
        if self._fetching.get(prefix) is done:
            del self._fetching[prefix]
        if not done.cancelled():
            done.exception()  # retrieved: every waiter got it, or none was left to

    async def _refresh(self, prefix: str) -> _Entry:
        """The key's entry from the store, cached for the TTL (a miss for less)."""
        now = self._clock()
        try:
            record, tenant, plan = await asyncio.wait_for(
                self._fetch(prefix), self._lookup_timeout_s
            )
        except TimeoutError:
            raise ModelgateError(
                ErrorKind.UNAVAILABLE, "the key store did not answer in time", retry_after=1.0
            ) from None
        ttl = self._ttl if record is not None else min(self._ttl, _MISS_TTL_S)
        entry = _Entry(record, tenant, plan, now + ttl)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache = {k: v for k, v in self._cache.items() if v.until > now}
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
        self._cache[prefix] = entry
        return entry
