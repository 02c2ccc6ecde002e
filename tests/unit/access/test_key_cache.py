"""The per-replica key cache: a key in use never waits for the store (refresh ahead), and a
key seen valid keeps working while the store is down (stale-if-error), for a bounded time,
never for a key the store said was unknown, revoked or expired (issue 15)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.core.access.authentication import Authenticator
from modelgate.core.access.identity import ApiKeyRecord, Plan, Principal, Tenant
from modelgate.core.access.keys import IssuedKey, issue_key
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.storage.memory.identity import MemoryIdentityStore

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TTL = 5.0
STALE = 30.0
#: after a failure, expired entries answer without waiting for the store this long: the
#: authenticator's 1 s between tries plus the look-up timeout the tests give it (2 s)
KNOWN_DOWN = 1.0 + 2.0


class Clock:
    """The authenticator's monotonic clock, and the wall clock it checks key times with."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def wall(self) -> datetime:
        return NOW + timedelta(seconds=self.t)


class RunningClock(Clock):
    """Real time, plus jumps: for the look-up timeout, which runs on the event loop's clock."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.jump = 0.0

    @property  # type: ignore[override]
    def t(self) -> float:
        return time.monotonic() - self.start + self.jump

    def __call__(self) -> float:
        return self.t


class FlakyStore(MemoryIdentityStore):
    """Fails on demand (UNAVAILABLE, as the SQL stores raise it, or no answer at all),
    counts key look-ups and can hold them in flight until the test lets them go."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.down = False
        self.hang = False
        self.gate = asyncio.Event()
        self.gate.set()
        self.lookups = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.failures: list[float] = []
        #: when the last complete look-up was answered (its last query is the plan's)
        self.answered: float | None = None

    def _check(self) -> None:
        if self.down:
            self.failures.append(self.clock.t)
            raise ModelgateError(ErrorKind.UNAVAILABLE, "the database is unavailable")

    async def find_key(self, prefix: str) -> ApiKeyRecord | None:
        self.lookups += 1
        self._check()
        record = await super().find_key(prefix)  # read before waiting, as a query would
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.hang:
                await asyncio.Event().wait()
            await self.gate.wait()
        finally:
            self.in_flight -= 1
        return record

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        self._check()
        return await super().get_tenant(tenant_id)

    async def get_plan(self, name: str) -> Plan | None:
        self._check()
        self.answered = self.clock.t
        return await super().get_plan(name)

    async def add_key(self, **fields: object) -> IssuedKey:
        issued = issue_key()
        record = ApiKeyRecord(
            id=f"k{len(self._keys) + 1}",
            tenant_id="t1",
            name="ci",
            prefix=issued.prefix,
            key_hash=issued.key_hash,
            scopes=("infer",),
            created_at=NOW,
        )
        await self.create_key(replace(record, **fields))  # type: ignore[arg-type]
        return issued


async def _setup(
    *,
    stale: float = STALE,
    lookup_timeout_s: float = 2.0,
    clock: Clock | None = None,
    **key_fields: object,
) -> tuple[Clock, FlakyStore, Authenticator, IssuedKey]:
    clock = clock or Clock()
    store = FlakyStore(clock)
    await store.create_plan(Plan(name="free"))
    await store.create_tenant(Tenant(id="t1", name="acme", plan="free", created_at=NOW))
    issued = await store.add_key(**key_fields)
    auth = Authenticator(
        store,
        cache_ttl_s=TTL,
        stale_if_error_s=stale,
        lookup_timeout_s=lookup_timeout_s,
        clock=clock,
        now=clock.wall,
    )
    return clock, store, auth, issued


async def _settle() -> None:
    """Let background refreshes run to their end (the fake store needs a few loop turns)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def _at_once(auth: Authenticator, secret: str) -> Principal:
    """Authenticate, asserting the request did not wait for the store (done in one turn)."""
    task = asyncio.ensure_future(auth.authenticate(secret))
    await asyncio.sleep(0)
    assert task.done(), "the request waited for the store"
    return task.result()


async def _kind(auth: Authenticator, secret: str) -> ErrorKind | None:
    """None when admitted, else the error's kind."""
    try:
        await auth.authenticate(secret)
    except ModelgateError as exc:
        return exc.kind
    return None


# refresh ahead


async def test_a_hot_key_never_waits_for_the_store() -> None:
    """A key used every quarter second for ten TTLs: every request is answered from the
    cache at once, while the store is slow, and the store sees about one look-up per
    refresh window instead of one request waiting at every expiry."""
    clock, store, auth, issued = await _setup()
    await auth.authenticate(issued.secret)
    for _ in range(200):
        clock.t += 0.25
        store.gate.clear()  # a request that waited for the store now would not finish
        assert (await _at_once(auth, issued.secret)).subject == "k1"
        store.gate.set()
        await _settle()
    # 50 s / (a refresh every 75% of 5 s, a request late at most): 14 refreshes, + the fill
    assert 12 <= store.lookups <= 16


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gaps=st.lists(st.floats(0.0, TTL * 0.25 - 0.01), min_size=1, max_size=120))
async def test_requests_closer_than_the_refresh_window_never_miss(gaps: list[float]) -> None:
    clock, store, auth, issued = await _setup()
    await auth.authenticate(issued.secret)
    for gap in gaps:
        clock.t += gap
        store.gate.clear()
        await _at_once(auth, issued.secret)
        store.gate.set()
        await _settle()


async def test_a_hundred_concurrent_requests_start_one_refresh() -> None:
    clock, store, auth, issued = await _setup()
    await auth.authenticate(issued.secret)
    assert store.lookups == 1
    clock.t = TTL * 0.9
    store.gate.clear()  # the refresh stays in flight while the requests arrive
    results = await asyncio.gather(*(auth.authenticate(issued.secret) for _ in range(100)))
    assert {p.subject for p in results} == {"k1"}
    assert store.lookups == 2
    clock.t = TTL * 0.95  # still in flight: no second refresh
    await asyncio.gather(*(auth.authenticate(issued.secret) for _ in range(100)))
    assert store.lookups == 2
    store.gate.set()
    await _settle()
    clock.t = TTL * 1.5  # the refresh replaced the entry: still fresh
    await _at_once(auth, issued.secret)
    assert store.lookups == 2


async def test_background_refreshes_are_capped() -> None:
    clock, store, auth, _ = await _setup()
    secrets = [(await store.add_key()).secret for _ in range(40)]
    for secret in secrets:
        await auth.authenticate(secret)
    before = store.lookups
    clock.t = TTL * 0.8
    store.gate.clear()
    for secret in secrets:  # all answered at once, but only some refresh now
        await _at_once(auth, secret)
    await _settle()
    assert 1 <= store.in_flight <= 16
    assert store.lookups - before == store.in_flight
    store.gate.set()
    await _settle()
    clock.t = TTL * 1.1  # the rest expired: each waits for its own look-up, none is refused
    assert all(p.tenant_id == "t1" for p in [await auth.authenticate(s) for s in secrets])


async def test_a_revocation_is_seen_within_the_ttl_while_a_hot_key_is_refreshed() -> None:
    clock, store, auth, issued = await _setup()
    await auth.authenticate(issued.secret)
    revoked_at = 1.0
    while clock.t < 20:
        clock.t = round(clock.t + 0.5, 3)
        if clock.t == revoked_at:
            await store.revoke_key("k1", clock.wall())
        kind = await _kind(auth, issued.secret)
        if clock.t >= revoked_at + TTL:
            assert kind is ErrorKind.UNAUTHENTICATED, clock.t
        await _settle()


async def test_a_refresh_in_flight_does_not_undo_forget() -> None:
    """The admin API revokes a key and makes this replica forget it at once: a refresh that
    read the key before the revocation must not put it back in the cache."""
    clock, store, auth, issued = await _setup()
    await auth.authenticate(issued.secret)
    clock.t = TTL * 0.9
    store.gate.clear()
    await _at_once(auth, issued.secret)  # starts the refresh, which reads the key, unrevoked
    await _settle()
    await store.revoke_key("k1", clock.wall())
    auth.forget(issued.prefix)
    store.gate.set()
    await _settle()
    assert await _kind(auth, issued.secret) is ErrorKind.UNAUTHENTICATED


# stale-if-error


async def test_a_known_key_keeps_working_through_an_outage_for_the_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, store, auth, issued = await _setup()
    await auth.authenticate(issued.secret)
    store.down = True
    with caplog.at_level(logging.INFO, logger="modelgate.access"):
        for t in (TTL * 0.5, TTL * 0.9, TTL + 0.1, TTL + 10, TTL + STALE - 0.1):
            clock.t = t
            assert (await auth.authenticate(issued.secret)).subject == "k1", t
            await _settle()
        clock.t = TTL + STALE + 0.1
        assert await _kind(auth, issued.secret) is ErrorKind.UNAVAILABLE
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1  # once per outage
        store.down = False
        assert (await auth.authenticate(issued.secret)).subject == "k1"
        store.down = True  # a second outage warns again
        clock.t += TTL + 1
        await auth.authenticate(issued.secret)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    for record in caplog.records:
        assert issued.secret not in record.getMessage()
        assert issued.prefix not in record.getMessage()


async def test_when_the_store_does_not_answer_only_the_first_request_waits() -> None:
    """PostgreSQL dropping packets: the first request past the TTL waits for the look-up
    timeout and is then answered from the entry; the next ones do not wait at all."""
    clock = RunningClock()
    clock, store, auth, issued = await _setup(lookup_timeout_s=0.05, clock=clock)
    await auth.authenticate(issued.secret)
    store.hang = True
    clock.jump = TTL + 1
    started = time.monotonic()
    assert (await auth.authenticate(issued.secret)).subject == "k1"  # after the timeout
    assert 0.04 < time.monotonic() - started < 1.0
    tries = store.lookups
    while time.monotonic() - started < 2.5:  # past two retries, which time out as well
        assert (await _at_once(auth, issued.secret)).subject == "k1"
        await asyncio.sleep(0.01)
    assert 1 <= store.lookups - tries <= 4  # a try a second, not one per request


async def test_stale_if_error_zero_turns_it_off() -> None:
    clock, store, auth, issued = await _setup(stale=0.0)
    await auth.authenticate(issued.secret)
    store.down = True
    clock.t = TTL + 0.1
    assert await _kind(auth, issued.secret) is ErrorKind.UNAVAILABLE


@pytest.mark.parametrize("said", ["unknown", "revoked", "expired", "disabled tenant"])
async def test_a_key_the_store_refused_is_never_served_stale(said: str) -> None:
    fields: dict[str, object] = {
        "revoked": {"revoked_at": NOW},
        "expired": {"expires_at": NOW},
    }.get(said, {})
    clock, store, auth, issued = await _setup(**fields)
    secret = "mg_live_zzzzzzzzzzzz_" + "y" * 32 if said == "unknown" else issued.secret
    if said == "disabled tenant":
        store._tenants["t1"] = replace(store._tenants["t1"], disabled=True)
    refused = await _kind(auth, secret)
    assert refused in (ErrorKind.UNAUTHENTICATED, ErrorKind.PERMISSION_DENIED)
    store.down = True
    for t in (TTL + 0.1, TTL + 0.2, TTL + 5):
        clock.t = t
        assert await _kind(auth, secret) is ErrorKind.UNAVAILABLE


async def test_a_key_that_expires_during_the_outage_stops_then() -> None:
    clock, store, auth, issued = await _setup(expires_at=NOW + timedelta(seconds=TTL + 4))
    await auth.authenticate(issued.secret)
    store.down = True
    clock.t = TTL + 1
    assert (await auth.authenticate(issued.secret)).subject == "k1"
    clock.t = TTL + 4
    assert await _kind(auth, issued.secret) is ErrorKind.UNAVAILABLE
    store.down = False
    assert await _kind(auth, issued.secret) is ErrorKind.UNAUTHENTICATED


async def test_a_key_revoked_on_another_replica_is_refused_once_the_store_answers() -> None:
    clock, store, auth, issued = await _setup()
    await auth.authenticate(issued.secret)
    store.down = True
    clock.t = TTL + 1
    assert (await auth.authenticate(issued.secret)).subject == "k1"  # stale
    store.down = False
    await store.revoke_key("k1", clock.wall())  # elsewhere, as the store comes back
    clock.t += KNOWN_DOWN
    assert await _kind(auth, issued.secret) is ErrorKind.UNAUTHENTICATED


async def test_once_the_store_answers_for_one_key_no_key_is_served_stale() -> None:
    clock, store, auth, issued = await _setup()
    other = await store.add_key()
    await auth.authenticate(issued.secret)
    await auth.authenticate(other.secret)
    store.down = True
    clock.t = TTL + 1
    for secret in (issued.secret, other.secret):
        assert (await auth.authenticate(secret)).tenant_id == "t1"  # both stale
    store.down = False
    await store.revoke_key("k2", clock.wall())  # elsewhere
    clock.t += 1.5  # past the retry interval, within the outage's tail
    await _at_once(auth, issued.secret)  # stale, and its retry in the background succeeds
    await _settle()
    clock.t += 0.1
    assert await _kind(auth, other.secret) is ErrorKind.UNAUTHENTICATED


# random interleavings of time, outages, revocation and requests

_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("wait"), st.floats(0.01, 8.0)),
        st.tuples(st.sampled_from(["down", "up", "revoke", "request"]), st.just(0.0)),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=_STEPS)
async def test_any_interleaving_keeps_the_cache_honest(steps: list[tuple[str, float]]) -> None:
    """Whatever the order of time, outages, a revocation and requests:

    - with the store up, a valid key is admitted and a key revoked a TTL ago is refused
      (unless the store failed in the last few seconds: an outage's tail);
    - with the store down, a valid key looked up within TTL + stale is admitted;
    - a revoked key is admitted only within the TTL of its revocation, or within TTL + stale
      during (or just after) an outage.
    """
    clock, store, auth, issued = await _setup()
    revoked: float | None = None
    for step, value in [*steps, ("request", 0.0)]:
        if step == "wait":
            clock.t += value
        elif step == "down":
            store.down = True
        elif step == "up":
            store.down = False
        elif step == "revoke" and revoked is None and not store.down:
            await store.revoke_key("k1", clock.wall())
            revoked = clock.t
        elif step == "request":
            now = clock.t
            seen = store.answered  # before this request: the entry it may stand on
            kind = await _kind(auth, issued.secret)
            recent_failure = any(now < f + KNOWN_DOWN for f in store.failures)
            if revoked is None:
                if not store.down:
                    assert kind is None, (now, kind)
                elif seen is not None and now < seen + TTL + STALE:
                    assert kind is None, (now, seen, kind)
            elif kind is None:
                assert now < revoked + TTL or (now < revoked + TTL + STALE and recent_failure), (
                    now,
                    revoked,
                )
            elif not store.down and now >= revoked + TTL and not recent_failure:
                assert kind is ErrorKind.UNAUTHENTICATED
        await _settle()


# what a refresh hands on


class CopyingStore(FlakyStore):
    """Answers each look-up with new objects, as the SQL stores do."""

    async def get_plan(self, name: str) -> Plan | None:
        plan = await super().get_plan(name)
        return replace(plan) if plan is not None else None


async def test_a_refresh_that_finds_the_key_unchanged_keeps_the_same_principal() -> None:
    """Admission and quotas keep what they work out per plan under the plan object: a
    refresh that finds nothing changed hands on the same objects, so that they are found by
    identity; a plan that changed comes through as the new plan."""
    clock = Clock()
    store = CopyingStore(clock)
    await store.create_plan(Plan(name="free", requests_per_second=5.0))
    await store.create_tenant(Tenant(id="t1", name="acme", plan="free", created_at=NOW))
    issued = await store.add_key()
    auth = Authenticator(store, cache_ttl_s=TTL, clock=clock, now=clock.wall)
    first = await auth.authenticate(issued.secret)
    for _ in range(3):  # each past the refresh window: a look-up with new objects
        clock.t += TTL * 0.8
        assert await auth.authenticate(issued.secret) is first
        await _settle()
        assert await auth.authenticate(issued.secret) is first
    assert store.lookups == 4
    store._plans["free"] = Plan(name="free", requests_per_second=9.0)
    clock.t += TTL * 0.8
    await auth.authenticate(issued.secret)  # starts the refresh that reads the new plan
    await _settle()
    changed = await auth.authenticate(issued.secret)
    assert changed is not first
    assert changed.plan.requests_per_second == 9.0
