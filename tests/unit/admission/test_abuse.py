"""The abuse guard with an injected clock and sleep: what counts, when answers slow down,
when a key or an address is blocked and for how long, what the local cache saves, and that
a failing store never fails a request."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import pytest

from modelgate.boot.stores import build_abuse_guard
from modelgate.core.access.identity import Plan, Principal
from modelgate.core.admission.abuse import (
    COUNTED,
    AbuseGuard,
    AbusePolicy,
    address_subject,
    key_subject,
)
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.settings import Settings
from modelgate.storage.memory.strikes import MemoryStrikeStore

POLICY = AbusePolicy(
    window_s=60.0,
    slow_after=3,
    block_after=7,
    block_s=300.0,
    auth_failures_per_address=5,
    max_delay_s=2.0,
)
GOOD = "mg_live_good"
PRINCIPAL = Principal("ten_acme", "key_probe", frozenset({"infer"}), Plan("basic"))
OTHER = Principal("ten_acme", "key_other", frozenset({"infer"}), Plan("basic"))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingStore(MemoryStrikeStore):
    """The memory store, counting the calls that would be round trips to a shared one;
    ``failing`` makes every call raise UNAVAILABLE, as a dead Redis does."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock=clock)
        self.calls = 0
        self.failing = False

    async def _enter(self) -> None:
        self.calls += 1
        if self.failing:
            raise ModelgateError(ErrorKind.UNAVAILABLE, "strike store unavailable: down")

    async def strike(self, subject: str, window_s: float) -> int:
        await self._enter()
        return await super().strike(subject, window_s)

    async def block(self, subject: str, seconds: float) -> None:
        await self._enter()
        await super().block(subject, seconds)

    async def blocked_for(self, subject: str) -> float:
        await self._enter()
        return await super().blocked_for(subject)


class FakeAuthenticator:
    """Accepts ``GOOD`` as :data:`PRINCIPAL`; counts the look-ups it is asked for."""

    def __init__(self) -> None:
        self.lookups = 0

    async def authenticate(self, credential: str | None) -> Principal:
        if not credential:
            raise ModelgateError(ErrorKind.UNAUTHENTICATED, "an API key is required")
        self.lookups += 1
        if credential != GOOD:
            raise ModelgateError(ErrorKind.UNAUTHENTICATED, "the API key is not valid")
        return PRINCIPAL


class World:
    def __init__(self, policy: AbusePolicy = POLICY, recheck_s: float = 1.0) -> None:
        self.clock = Clock()
        self.store = CountingStore(self.clock)
        self.slept: list[float] = []
        self.guard = AbuseGuard(
            self.store, policy, recheck_s=recheck_s, clock=self.clock, sleep=self._sleep
        )
        self.authenticator = FakeAuthenticator()

    async def _sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    async def blocked(self, subject: str) -> ModelgateError | None:
        try:
            await self.guard.check(subject)
        except ModelgateError as exc:
            return exc
        return None


@pytest.fixture
def world() -> World:
    return World()


KEY = key_subject(PRINCIPAL)
ADDRESS = "203.0.113.9"


# -- keys -------------------------------------------------------------------------------------


async def test_failures_are_answered_at_once_then_slower_up_to_the_cap(world: World) -> None:
    delays = [await world.guard.failed(KEY) for _ in range(7)]

    assert delays == pytest.approx([0, 0, 0, 0.5, 1.0, 1.5, 2.0])


async def test_the_blocking_failure_blocks_the_key_for_block_seconds(world: World) -> None:
    for _ in range(6):
        await world.guard.failed(KEY)
    assert await world.blocked(KEY) is None

    await world.guard.failed(KEY)

    refused = await world.blocked(KEY)
    assert refused is not None and refused.kind is ErrorKind.RATE_LIMITED
    assert refused.retry_after == pytest.approx(300)
    assert "blocked for 300 s" in refused.message
    world.clock.now += 299
    later = await world.blocked(KEY)
    assert later is not None and later.retry_after == pytest.approx(1)
    world.clock.now += 1.5
    assert await world.blocked(KEY) is None
    # other keys never were
    assert await world.blocked(key_subject(OTHER)) is None


async def test_failures_of_an_ended_window_are_forgotten(world: World) -> None:
    for _ in range(6):
        await world.guard.failed(KEY)
    world.clock.now += 61

    delays = [await world.guard.failed(KEY) for _ in range(3)]

    assert delays == [0, 0, 0]
    assert await world.blocked(KEY) is None


@pytest.mark.parametrize("kind", list(ErrorKind))
async def test_only_a_clients_mistakes_count_against_its_key(world: World, kind: ErrorKind) -> None:
    for _ in range(7):
        await world.guard.penalize(PRINCIPAL, ModelgateError(kind, "x"))

    blocked = await world.blocked(KEY) is not None
    assert blocked is (kind in COUNTED)
    if kind in COUNTED:
        assert world.slept == pytest.approx([0.5, 1.0, 1.5, 2.0])  # strikes 4 to 7
    else:
        assert world.slept == []


def test_what_counts_is_client_mistakes_and_probing() -> None:
    assert {
        ErrorKind.INVALID_ARGUMENT,
        ErrorKind.PERMISSION_DENIED,
        ErrorKind.NOT_FOUND,
        ErrorKind.PAYLOAD_TOO_LARGE,
        ErrorKind.UNSUPPORTED,
    } == COUNTED


async def test_no_principal_no_count(world: World) -> None:
    for _ in range(10):
        await world.guard.penalize(None, ModelgateError(ErrorKind.NOT_FOUND, "no route"))

    assert world.store.calls == 0


def test_keys_of_two_tenants_with_one_subject_are_counted_apart() -> None:
    a = Principal("ten_a", "user-1", frozenset(), Plan("p"), "jwt")
    b = Principal("ten_b", "user-1", frozenset(), Plan("p"), "jwt")

    assert key_subject(a) != key_subject(b)


# -- addresses --------------------------------------------------------------------------------


async def test_an_address_is_blocked_after_its_refused_credentials(world: World) -> None:
    guard, auth = world.guard, world.authenticator
    for i in range(5):
        with pytest.raises(ModelgateError) as refused:
            await guard.authenticate(auth, f"mg_live_guess{i}", ADDRESS)  # type: ignore[arg-type]
        assert refused.value.kind is ErrorKind.UNAUTHENTICATED
    assert world.slept == pytest.approx([1.0, 2.0])  # past slow_after (3), up to the 5th
    assert auth.lookups == 5

    with pytest.raises(ModelgateError) as blocked:
        await guard.authenticate(auth, GOOD, ADDRESS)  # type: ignore[arg-type]

    assert blocked.value.kind is ErrorKind.RATE_LIMITED
    assert "address" in blocked.value.message
    assert auth.lookups == 5  # refused before the credential was looked up
    # another address, and the same key from it, go on
    principal = await guard.authenticate(auth, GOOD, "203.0.113.10")  # type: ignore[arg-type]
    assert principal == PRINCIPAL


async def test_missing_credentials_count_against_the_address_and_block_it(world: World) -> None:
    # a flood without credentials is throttled like one with bad ones (issue 16, finding 2)
    for _ in range(4):
        with pytest.raises(ModelgateError):
            await world.guard.authenticate(world.authenticator, None, ADDRESS)  # type: ignore[arg-type]
    assert await world.blocked(address_subject(ADDRESS)) is None

    with pytest.raises(ModelgateError):
        await world.guard.authenticate(world.authenticator, None, ADDRESS)  # type: ignore[arg-type]

    refused = await world.blocked(address_subject(ADDRESS))
    assert refused is not None and refused.kind is ErrorKind.RATE_LIMITED


async def test_a_valid_credential_of_a_blocked_key_is_refused(world: World) -> None:
    await world.guard.authenticate(world.authenticator, GOOD, ADDRESS)  # type: ignore[arg-type]
    for _ in range(7):
        await world.guard.penalize(PRINCIPAL, ModelgateError(ErrorKind.NOT_FOUND, "x"))

    with pytest.raises(ModelgateError) as blocked:
        await world.guard.authenticate(world.authenticator, GOOD, ADDRESS)  # type: ignore[arg-type]

    assert blocked.value.kind is ErrorKind.RATE_LIMITED
    assert "key" in blocked.value.message


async def test_an_unknown_address_is_never_counted(world: World) -> None:
    for _ in range(20):
        with pytest.raises(ModelgateError):
            await world.guard.authenticate(world.authenticator, "mg_live_bad", None)  # type: ignore[arg-type]

    assert world.store.calls == 0


@pytest.mark.parametrize(
    ("host", "subject"),
    [
        ("203.0.113.9", "ip:203.0.113.9"),
        ("2001:db8:1:2:3:4:5:6", "ip:2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "ip:2001:db8:1:2::/64"),
        ("::ffff:203.0.113.9", "ip:203.0.113.9"),
        ("testclient", "ip:testclient"),
    ],
)
def test_addresses_are_counted_per_ipv4_and_per_ipv6_64(host: str, subject: str) -> None:
    assert address_subject(host) == subject


# -- the local cache: the hot path does not wait on the store ---------------------------------


async def test_a_subject_found_not_blocked_is_trusted_for_recheck_s(world: World) -> None:
    assert await world.blocked(KEY) is None
    asked = world.store.calls
    for _ in range(100):
        assert await world.blocked(KEY) is None
    assert world.store.calls == asked  # no round trip per request

    # another replica blocks the key in the shared store
    await world.store.block(KEY, 300)
    world.clock.now += 0.5
    assert await world.blocked(KEY) is None  # not seen yet ...
    world.clock.now += 0.6
    refused = await world.blocked(KEY)  # ... but within recheck_s
    assert refused is not None and refused.retry_after == pytest.approx(298.9)


async def test_a_block_made_here_takes_effect_at_once(world: World) -> None:
    assert await world.blocked(KEY) is None  # cached as not blocked
    for _ in range(7):
        await world.guard.failed(KEY)

    assert await world.blocked(KEY) is not None


async def test_concurrent_checks_of_one_subject_ask_the_store_once() -> None:
    world = World()
    gate = asyncio.Event()
    asked = 0

    async def slow_blocked_for(subject: str) -> float:
        nonlocal asked
        asked += 1
        await gate.wait()
        return 0.0

    world.store.blocked_for = slow_blocked_for  # type: ignore[method-assign]
    checks = [asyncio.create_task(world.guard.check(KEY)) for _ in range(50)]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(*checks)

    assert asked == 1


async def test_the_local_caches_are_bounded() -> None:
    clock = Clock()
    guard = AbuseGuard(MemoryStrikeStore(clock=clock), POLICY, max_cached=50, clock=clock)
    for i in range(5000):
        await guard.check(f"ip:198.51.100.{i}")
    for i in range(200):
        for _ in range(7):
            await guard.failed(f"key:t:{i}")

    assert len(guard._clear) <= 50 and len(guard._blocked) <= 50
    # the newest block is held locally; one pushed out is still in the store
    assert guard._blocked["key:t:199"] > clock.now
    with pytest.raises(ModelgateError):
        await guard.check("key:t:0")


# -- a failing store --------------------------------------------------------------------------


async def test_a_failing_store_never_fails_a_request(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "modelgate.abuse")
    world.store.failing = True

    for _ in range(20):
        assert await world.blocked(KEY) is None
        world.clock.now += 2  # past recheck_s: the store is asked every time
        assert await world.guard.failed(KEY) == 0.0
        await world.guard.penalize(PRINCIPAL, ModelgateError(ErrorKind.NOT_FOUND, "x"))
    principal = await world.guard.authenticate(world.authenticator, GOOD, ADDRESS)  # type: ignore[arg-type]

    assert principal == PRINCIPAL
    degraded = [r for r in caplog.records if "degraded" in r.getMessage()]
    assert len(degraded) == 1  # logged once, not per request
    world.store.failing = False
    await world.guard.failed(KEY)
    assert "recovered" in caplog.records[-1].getMessage()


# -- policy and settings ----------------------------------------------------------------------


def test_the_delay_ramps_from_slow_after_to_the_limit() -> None:
    policy = replace(POLICY, slow_after=20, max_delay_s=2.0)

    assert policy.delay(20, 50) == 0
    assert policy.delay(35, 50) == pytest.approx(1.0)
    assert policy.delay(50, 50) == pytest.approx(2.0)
    assert policy.delay(80, 50) == pytest.approx(2.0)
    assert policy.delay(25, 21) == pytest.approx(2.0)  # a ramp of one failure


def test_the_settings_make_the_policy() -> None:
    settings = Settings(
        abuse_window_seconds=30,
        abuse_slow_after=5,
        abuse_block_after=9,
        abuse_block_seconds=600,
        abuse_auth_failures_per_ip=7,
    )

    policy = build_abuse_guard(settings).policy

    assert policy == AbusePolicy(
        window_s=30, slow_after=5, block_after=9, block_s=600, auth_failures_per_address=7
    )
    assert policy.limit_for("ip:203.0.113.9") == 7
    assert policy.limit_for(key_subject(PRINCIPAL)) == 9
