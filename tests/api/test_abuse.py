"""Abuse throttling end to end, REST and gRPC, on a real in-process server with the SQLite
identity store: a key that keeps failing is slowed, then blocked with 429 /
RESOURCE_EXHAUSTED and Retry-After; guessing keys (or OAuth client secrets, or admin keys)
from one address gets that address blocked before its next credential is looked up; other
keys and addresses go on; nothing secret reaches the logs; with Redis, a block holds on
every replica.

Thresholds are tiny (slowed after 2 failures, blocked at 4; an address blocked at 3
refused credentials) and the longest delay is 0.2 s, so the suite stays fast. REST clients
pick their address with ``X-Forwarded-For``, which the server here trusts from 127.0.0.1
(``forwarded_allow_ips``; by default it trusts no one); gRPC clients are 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import redis
from pydantic import SecretStr
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelgate.core.access.identity import ApiKeyRecord, Plan, Tenant
from modelgate.core.access.keys import issue_key
from modelgate.identity.jwt import generate_signing_key
from modelgate.server import Server
from modelgate.settings import Settings
from tests.conftest import FIXTURE_MODELS, REDIS_URL

ADMIN = "admin-" + secrets.token_hex(12)
ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
#: the longest delay; failure 3 waits half of it, failure 4 (the blocking one) all of it
DELAY_S = 0.2
BLOCK_S = 120
SIGNING_KEY = generate_signing_key("ES256")


@dataclass
class World:
    server: Server
    keys: dict[str, str]
    lookups: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"


@contextlib.asynccontextmanager
async def serving(data_dir: Path, **overrides: Any) -> AsyncIterator[World]:
    settings = Settings(
        **{
            "model_repository": FIXTURE_MODELS,
            "data_dir": data_dir,
            "http_port": 0,
            "grpc_port": 0,
            "log_level": "warning",
            "auth": "required",
            "admin_key": SecretStr(ADMIN),
            "key_cache_seconds": 0,  # every credential is looked up: the count below is exact
            "jwt_issuer": "https://modelgate.test",
            "jwt_signing_key": SecretStr(SIGNING_KEY),
            "abuse_window_seconds": 60,
            "abuse_slow_after": 2,
            "abuse_block_after": 4,
            "abuse_block_seconds": BLOCK_S,
            "abuse_auth_failures_per_ip": 3,
            "forwarded_allow_ips": "127.0.0.1",
            **overrides,
        }
    )
    server = Server(settings)
    task = asyncio.create_task(server.serve())
    started = asyncio.create_task(server.started.wait())
    await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        started.cancel()
        task.result()
    try:
        components = server.components
        assert components is not None and components.state is not None
        assert components.abuse is not None
        components.abuse.policy = replace(components.abuse.policy, max_delay_s=DELAY_S)
        store = components.state.identity
        await store.create_plan(Plan(name="basic"))
        await store.create_tenant(
            Tenant(id="ten_acme", name="acme", plan="basic", created_at=datetime.now(UTC))
        )
        keys = {"admin": ADMIN}
        for name in ("prober", "acme"):
            issued = issue_key()
            await store.create_key(
                ApiKeyRecord(
                    id=f"key_{name}",
                    tenant_id="ten_acme",
                    name=name,
                    prefix=issued.prefix,
                    key_hash=issued.key_hash,
                    scopes=("infer", "models:read"),
                    created_at=datetime.now(UTC),
                )
            )
            keys[name] = issued.secret
        world = World(server, keys)
        find_key = store.find_key

        async def counted_find_key(prefix: str) -> Any:
            world.lookups.append(prefix)
            return await find_key(prefix)

        store.find_key = counted_find_key  # type: ignore[method-assign]
        yield world
    finally:
        server.request_stop()
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with serving(tmp_path / "data") as running:
        yield running


# -- one inference call per protocol, as (outcome, retry-after, message, seconds) -------------

_REST = {200: "ok", 401: "unauthenticated", 404: "not_found", 429: "rate_limited"}
_GRPC = {
    grpc.StatusCode.OK: "ok",
    grpc.StatusCode.UNAUTHENTICATED: "unauthenticated",
    grpc.StatusCode.NOT_FOUND: "not_found",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "rate_limited",
}


@dataclass
class Answer:
    outcome: str
    retry_after: str | None
    message: str
    seconds: float


async def infer(
    world: World, protocol: str, key: str, model: str = "doubler", address: str | None = None
) -> Answer:
    started = time.monotonic()
    if protocol == "rest":
        headers = {"Authorization": f"Bearer {key}"}
        if address:
            headers["X-Forwarded-For"] = address
        async with httpx.AsyncClient(base_url=world.url) as client:
            response = await client.post(f"/v2/models/{model}/infer", json=ROW, headers=headers)
        message = "" if response.status_code == 200 else response.json()["error"]
        return Answer(
            _REST[response.status_code],
            response.headers.get("retry-after"),
            message,
            time.monotonic() - started,
        )
    assert address is None, "a gRPC client is 127.0.0.1"
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([1, 2, 3, 4])
    async with grpc.aio.insecure_channel(world.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            await stub.ModelInfer(request, metadata=(("authorization", f"Bearer {key}"),))
        except grpc.aio.AioRpcError as exc:
            retry_after = dict(exc.trailing_metadata() or ()).get("retry-after")
            return Answer(
                _GRPC[exc.code()], retry_after, exc.details() or "", time.monotonic() - started
            )
    return Answer("ok", None, "", time.monotonic() - started)


# -- a key that keeps failing -----------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
async def test_a_burst_of_bad_requests_is_slowed_then_blocked(world: World, protocol: str) -> None:
    prober = world.keys["prober"]

    probes = [await infer(world, protocol, prober, model="nope") for _ in range(4)]

    assert [a.outcome for a in probes] == ["not_found"] * 4
    assert probes[2].seconds >= DELAY_S / 2 * 0.9  # slowed past 2 failures ...
    assert probes[3].seconds >= DELAY_S * 0.9  # ... more with each one
    blocked = await infer(world, protocol, prober)  # a valid request of the blocked key
    assert blocked.outcome == "rate_limited"
    assert blocked.retry_after is not None and BLOCK_S - 2 <= int(blocked.retry_after) <= BLOCK_S
    assert "blocked" in blocked.message
    # on the other protocol too, and never for another key
    other = "grpc" if protocol == "rest" else "rest"
    assert (await infer(world, other, prober)).outcome == "rate_limited"
    assert (await infer(world, protocol, world.keys["acme"])).outcome == "ok"


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
async def test_failures_that_are_not_the_clients_do_not_count(world: World, protocol: str) -> None:
    prober = world.keys["prober"]
    # RATE_LIMITED answers of a plan's limit are not the client's mistakes; valid requests
    # neither: many of them, between a few failures, never block
    for _ in range(3):
        assert (await infer(world, protocol, prober)).outcome == "ok"
    for _ in range(3):
        assert (await infer(world, protocol, prober, model="nope")).outcome == "not_found"

    assert (await infer(world, protocol, prober)).outcome == "ok"


async def test_openai_routes_answer_a_blocked_key_in_openai_shape(world: World) -> None:
    headers = {"Authorization": f"Bearer {world.keys['prober']}"}
    async with httpx.AsyncClient(base_url=world.url) as client:
        probes = [await client.get("/v1/models/nope", headers=headers) for _ in range(4)]
        response = await client.post(
            "/v1/embeddings", json={"model": "doubler", "input": "x"}, headers=headers
        )

    assert [p.status_code for p in probes] == [404] * 4
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["type"] == "rate_limit_exceeded" and error["code"] == "rate_limit_exceeded"
    assert "blocked" in error["message"]
    assert int(response.headers["retry-after"]) >= BLOCK_S - 2


# -- guessing credentials from one address ------------------------------------------------------


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
async def test_key_guessing_from_one_address_is_blocked_before_any_lookup(
    world: World, protocol: str
) -> None:
    address = "203.0.113.7" if protocol == "rest" else None
    guesses = [issue_key().secret for _ in range(3)]

    answers = [await infer(world, protocol, guess, address=address) for guess in guesses]
    assert [a.outcome for a in answers] == ["unauthenticated"] * 3
    assert len(world.lookups) == 3

    blocked = await infer(world, protocol, world.keys["acme"], address=address)

    assert blocked.outcome == "rate_limited"
    assert blocked.retry_after is not None and int(blocked.retry_after) >= BLOCK_S - 2
    assert "address" in blocked.message
    assert len(world.lookups) == 3  # refused before the valid key was looked up
    # another address goes on
    assert (await infer(world, "rest", world.keys["acme"], address="203.0.113.8")).outcome == "ok"


async def test_requests_without_a_key_get_the_address_blocked(world: World) -> None:
    # a flood without credentials is throttled too (issue 16, finding 2)
    flooder = {"X-Forwarded-For": "203.0.113.20"}
    async with httpx.AsyncClient(base_url=world.url) as client:
        statuses = [
            (await client.post("/v2/models/doubler/infer", json=ROW, headers=flooder)).status_code
            for _ in range(4)
        ]

    assert statuses == [401, 401, 401, 429]
    assert (await infer(world, "rest", world.keys["acme"])).outcome == "ok"  # another address


async def test_guessing_client_secrets_at_oauth_token_is_throttled(world: World) -> None:
    def form(secret: str) -> dict[str, str]:
        return {
            "grant_type": "client_credentials",
            "client_id": "key_acme",
            "client_secret": secret,
        }

    here, elsewhere = {"X-Forwarded-For": "198.51.100.4"}, {"X-Forwarded-For": "198.51.100.5"}
    async with httpx.AsyncClient(base_url=world.url) as client:
        guesses = [
            await client.post("/oauth/token", data=form(issue_key().secret), headers=here)
            for _ in range(3)
        ]
        lookups = len(world.lookups)
        blocked = await client.post("/oauth/token", data=form(world.keys["acme"]), headers=here)
        looked_up_for_it = len(world.lookups) - lookups
        other = await client.post("/oauth/token", data=form(world.keys["acme"]), headers=elsewhere)

    assert [g.status_code for g in guesses] == [401] * 3
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) >= BLOCK_S - 2
    assert looked_up_for_it == 0
    assert other.status_code == 200 and other.json()["token_type"] == "Bearer"


async def test_guessing_keys_on_admin_is_throttled(world: World) -> None:
    here, elsewhere = "192.0.2.44", "192.0.2.45"
    async with httpx.AsyncClient(base_url=world.url) as client:

        async def plans(key: str, address: str) -> httpx.Response:
            headers = {"Authorization": f"Bearer {key}", "X-Forwarded-For": address}
            return await client.get("/admin/plans", headers=headers)

        guesses = [await plans(issue_key().secret, here) for _ in range(3)]
        blocked = await plans(world.keys["admin"], here)
        other = await plans(world.keys["admin"], elsewhere)

    assert [g.status_code for g in guesses] == [401] * 3
    assert blocked.status_code == 429 and "blocked" in blocked.json()["error"]
    assert other.status_code == 200


# -- logs -----------------------------------------------------------------------------------------


async def test_no_key_or_secret_reaches_the_logs(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    guesses = [issue_key().secret for _ in range(4)]
    for guess in guesses:
        await infer(world, "rest", guess, address="203.0.113.70")
    for _ in range(5):
        await infer(world, "grpc", world.keys["prober"], model="nope")
    await infer(world, "rest", world.keys["acme"], address="203.0.113.70")
    async with httpx.AsyncClient(base_url=world.url) as client:
        await client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "client_id": "key_x", "client_secret": "s"},
        )

    text = caplog.text
    assert "blocked for" in text  # an operator sees the blocks ...
    for secret in [*guesses, *world.keys.values(), SIGNING_KEY]:
        assert secret not in text  # ... and no credential


# -- replicas sharing Redis -----------------------------------------------------------------------


async def _refused_within(world: World, key: str, address: str, seconds: float) -> Answer:
    """Poll until ``key`` from ``address`` is refused (the other replica's local cache of
    "not blocked" lasts about a second)."""
    started = time.monotonic()
    while True:
        answer = await infer(world, "rest", key, address=address)
        if answer.outcome != "ok" or time.monotonic() - started > seconds:
            return answer
        await asyncio.sleep(0.05)


async def test_blocks_hold_across_replicas_sharing_redis(tmp_path: Path, redis_prefix: str) -> None:
    shared = {"redis_url": SecretStr(REDIS_URL), "redis_key_prefix": redis_prefix}
    async with (
        serving(tmp_path / "a", **shared) as a,
        serving(tmp_path / "b", **shared) as b,
    ):
        admin = a.keys["admin"]  # the bootstrap admin key: the same principal on both
        # b has seen the key and the address unblocked, and trusts that for a moment
        assert (await infer(b, "rest", admin, address="203.0.113.90")).outcome == "ok"

        for _ in range(4):
            await infer(a, "rest", admin, model="nope", address="203.0.113.90")
        for _ in range(3):
            await infer(a, "rest", issue_key().secret, address="203.0.113.91")

        key_blocked = await _refused_within(b, admin, "203.0.113.92", 2.0)
        address_blocked = await _refused_within(b, b.keys["acme"], "203.0.113.91", 2.0)
        with redis.Redis.from_url(REDIS_URL) as client:
            stored = {k.decode() for k in client.scan_iter(match=f"{redis_prefix}abuse:block:*")}

    assert key_blocked.outcome == "rate_limited" and "key" in key_blocked.message
    assert address_blocked.outcome == "rate_limited" and "address" in address_blocked.message
    assert stored == {
        f"{redis_prefix}abuse:block:key:*:bootstrap-admin",
        f"{redis_prefix}abuse:block:ip:203.0.113.91",
    }
