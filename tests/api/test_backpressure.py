"""Back-pressure on a flooding connection, REST and gRPC (issue 15): past a burst of
refusals in a row on one connection, each further refusal is held before it is answered (and
still carries Retry-After), while another tenant's request, and the same key's request on
another connection, are answered at once; with no hold free the refusal is answered at once
with ``Connection: close``; a shutdown answers held refusals at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
from pydantic import SecretStr
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelgate.core.access.identity import ApiKeyRecord, Plan, Tenant
from modelgate.core.access.keys import issue_key
from modelgate.core.admission.backpressure import HOLD_SPREAD
from modelgate.server import Server
from tests.api.conftest import running_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "backpressure-admin-key-0123456789"
ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
INFER = "/v2/models/doubler/infer"
BURST = 3
#: one request a second, no burst: a refusal's Retry-After is 1 s, so each hold is drawn
#: between SHORTEST_HOLD_S and 1 s
SHORTEST_HOLD_S = 1.0 * (1 - HOLD_SPREAD)
FLOODERS = ("rest", "grpc", "full")


@dataclass
class World:
    server: Server
    keys: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"


async def _tenants(server: Server, names: tuple[str, ...]) -> dict[str, str]:
    """A tenant and key per name: "calm" on a roomy plan, "slow" on one request in 100 s,
    the others on one request a second."""
    assert server.components is not None and server.components.state is not None
    store = server.components.state.identity
    await store.create_plan(Plan(name="one-a-second", requests_per_second=1.0, burst=1))
    await store.create_plan(Plan(name="roomy"))
    await store.create_plan(Plan(name="slow", requests_per_second=0.01, burst=1))
    now = datetime.now(UTC)
    keys = {}
    for name in names:
        plan = {"calm": "roomy", "slow": "slow"}.get(name, "one-a-second")
        await store.create_tenant(Tenant(f"ten_{name}", name, plan, now))
        issued = issue_key()
        await store.create_key(
            ApiKeyRecord(
                f"key_{name}", f"ten_{name}", name, issued.prefix, issued.key_hash, ("infer",), now
            )
        )
        keys[name] = issued.secret
    return keys


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with running_server(
        Path(tmp_path_factory.mktemp("backpressure")),
        auth="required",
        admin_key=SecretStr(ADMIN),
        refusal_burst=BURST,
        refusal_hold_seconds=30,
        refusal_max_held=1,
    ) as server:
        yield World(server, await _tenants(server, (*FLOODERS, "calm")))


def _as(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _refused_past_the_burst(client: httpx.AsyncClient, flood: dict[str, str]) -> None:
    """Served once, then ``BURST`` refusals (the full path's, then the memo's): all at once."""
    assert (await client.post(INFER, json=ROW, headers=flood)).status_code == 200
    for _ in range(BURST):
        assert (await client.post(INFER, json=ROW, headers=flood)).status_code == 429


async def test_a_connection_past_the_burst_is_held_while_others_are_answered_at_once(
    world: World,
) -> None:
    flood, calm = _as(world.keys["rest"]), _as(world.keys["calm"])
    async with (
        httpx.AsyncClient(base_url=world.url, timeout=30) as flooder,
        httpx.AsyncClient(base_url=world.url, timeout=30) as other_connection,
        httpx.AsyncClient(base_url=world.url, timeout=30) as another_tenant,
    ):
        await _refused_past_the_burst(flooder, flood)
        started = time.monotonic()
        held = asyncio.create_task(flooder.post(INFER, json=ROW, headers=flood))
        await asyncio.sleep(0.05)  # the held request reaches the server first
        served = await another_tenant.post(INFER, json=ROW, headers=calm)
        same_key = await other_connection.post(INFER, json=ROW, headers=flood)
        assert not held.done()  # both answered while the flooding connection waits
        refused = await held
        waited = time.monotonic() - started
    assert served.status_code == 200
    assert same_key.status_code == 429 and "connection" not in same_key.headers
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"  # counted down to when it was sent
    assert "rate limit" in refused.json()["error"]
    assert waited >= SHORTEST_HOLD_S - 0.05  # held for its Retry-After, drawn (a lower bound)


async def test_with_no_hold_free_a_refusal_is_answered_at_once_with_connection_close(
    world: World,
) -> None:
    flood = _as(world.keys["full"])
    async with (
        httpx.AsyncClient(base_url=world.url, timeout=30) as first,
        httpx.AsyncClient(base_url=world.url, timeout=30) as second,
    ):
        await _refused_past_the_burst(first, flood)
        held = asyncio.create_task(first.post(INFER, json=ROW, headers=flood))
        await asyncio.sleep(0.05)  # takes the one hold there is (refusal_max_held=1)
        for _ in range(BURST):
            assert (await second.post(INFER, json=ROW, headers=flood)).status_code == 429
        closed = await second.post(INFER, json=ROW, headers=flood)
        assert not held.done()
        assert (await held).status_code == 429
    assert closed.status_code == 429
    assert closed.headers["connection"] == "close"
    async with httpx.AsyncClient(base_url=world.url, timeout=30) as client:
        scraped = (await client.get("/metrics", headers=_as(ADMIN))).text
    assert _sample(scraped, "modelgate_refusals_held_total") >= 1
    assert _sample(scraped, "modelgate_refusals_closed_total") >= 1
    assert _sample(scraped, "modelgate_refusals_holding") == 0  # all answered by now


def _sample(scraped: str, name: str) -> float:
    """The value of an unlabelled series in a Prometheus scrape."""
    for line in scraped.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in the scrape")


async def test_a_grpc_peer_past_the_burst_is_held_while_others_are_answered_at_once(
    world: World,
) -> None:
    request = service_pb2.ModelInferRequest(model_name="doubler")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([1, 2, 3, 4])
    flood = (("authorization", f"Bearer {world.keys['grpc']}"),)
    calm = (("authorization", f"Bearer {world.keys['calm']}"),)
    address = f"127.0.0.1:{world.server.grpc_port}"
    async with (
        grpc.aio.insecure_channel(address) as flooding,
        grpc.aio.insecure_channel(address) as other,
    ):
        flooder = service_pb2_grpc.GRPCInferenceServiceStub(flooding)
        calm_stub = service_pb2_grpc.GRPCInferenceServiceStub(other)

        async def call(stub: Any, metadata: Any) -> tuple[Any, str | None]:
            try:
                await stub.ModelInfer(request, metadata=metadata, timeout=30)
            except grpc.aio.AioRpcError as exc:
                return exc.code(), dict(exc.trailing_metadata() or ()).get("retry-after")
            return grpc.StatusCode.OK, None

        assert (await call(flooder, flood))[0] == grpc.StatusCode.OK
        for _ in range(BURST):  # the full path, then the memo
            assert (await call(flooder, flood))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
        started = time.monotonic()
        held = asyncio.create_task(call(flooder, flood))
        await asyncio.sleep(0.05)
        served = await call(calm_stub, calm)
        assert not held.done()
        refused = await held
        waited = time.monotonic() - started
    assert served[0] == grpc.StatusCode.OK
    assert refused == (grpc.StatusCode.RESOURCE_EXHAUSTED, "1")
    assert waited >= SHORTEST_HOLD_S - 0.05


async def test_a_shutdown_answers_held_refusals_at_once(tmp_path: Path) -> None:
    """A key refused for 100 s, holds capped at 30 s: the held refusal is answered when the
    server stops, long before its hold would end."""
    async with running_server(
        tmp_path,
        auth="required",
        admin_key=SecretStr(ADMIN),
        refusal_burst=1,
        refusal_hold_seconds=30,
    ) as server:
        flood = _as((await _tenants(server, ("slow",)))["slow"])
        url = f"http://127.0.0.1:{server.http_port}"
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            assert (await client.post(INFER, json=ROW, headers=flood)).status_code == 200
            assert (await client.post(INFER, json=ROW, headers=flood)).status_code == 429
            held = asyncio.create_task(client.post(INFER, json=ROW, headers=flood))
            await asyncio.sleep(0.2)
            assert server.components is not None and server.components.backpressure is not None
            assert server.components.backpressure.held == 1
            server.request_stop()
            refused = await asyncio.wait_for(held, 10)  # not the 30 s hold
    assert refused.status_code == 429
    assert refused.headers["connection"] == "close"  # the server is going away
