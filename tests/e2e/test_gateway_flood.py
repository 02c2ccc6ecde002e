"""The flood scenario of issue 15 through a gateway, with real processes: a gateway and one
node (found through the machine's Redis, its own key prefix), tenants A, B and C on a plan
of 50 requests a second. A floods the gateway flat out on 8 connections while B (REST) and
C (gRPC) send 30 requests a second each: B and C are all answered 200; A gets 429 with
Retry-After from the gateway (its rate limit, then the refusal memo) and is held there by
back-pressure, so only what its plan admits reaches the node. The node tells the three
tenants apart (the gateway names each call's tenant; the node's fair-share table counts
them, not one gateway tenant; a call merging several tenants' requests counts under the
gateway's key)."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import redis
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelgate.core.access.authentication import ADMIN_TENANT
from tests.conftest import REDIS_URL
from tests.e2e.test_flood import (
    CALM_RPS,
    FLOOD_CONNECTIONS,
    HOLD_S,
    PLAN,
    SECONDS,
    Answers,
    _calm,
    _flood,
    check_flood_outcome,
)
from tests.e2e.test_gateway_nodes import GATEWAY_KEY, Cluster, _sample


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Cluster]:
    """A gateway and one node; the node counts tenants' shares (queue-delay shedding on,
    its target far above anything this test causes, so it never sheds)."""
    prefix = f"mgtest:{secrets.token_hex(6)}:"
    running = Cluster(tmp_path, prefix)
    running.env = {
        **running.env,
        "MODELGATE_SHED_QUEUE_TARGET_MS": "5000",
        "MODELGATE_SHED_QUEUE_SHARE_HALF_LIFE_SECONDS": "60",
    }
    try:
        running.start_node("a")
        running.start_gateway()
        yield running
    finally:
        running.stop()
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()


def _tenant(admin: httpx.Client, name: str) -> tuple[str, str]:
    """A tenant on the plan and its key: (tenant id, key)."""
    created = admin.post("/admin/tenants", json={"name": name, "plan": PLAN["name"]})
    assert created.status_code == 201, created.text
    key = admin.post(f"/admin/tenants/{created.json()['id']}/keys", json={"name": name})
    assert key.status_code == 201, key.text
    return str(created.json()["id"]), str(key.json()["secret"])


def _calm_grpc(address: str, key: str, answers: Answers, start: float) -> None:
    """``_calm`` over the gateway's gRPC endpoint: the status as HTTP's (200, 429, ...)."""
    request = service_pb2.ModelInferRequest(model_name="doubler")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([1, 2, 3, 4])
    metadata = (("authorization", f"Bearer {key}"),)
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for i in range(int(SECONDS * CALM_RPS)):
            time.sleep(max(0.0, start + i / CALM_RPS - time.monotonic()))
            sent = time.monotonic()
            try:
                stub.ModelInfer(request, timeout=10, metadata=metadata)
                status = 200
            except grpc.RpcError as exc:
                status = _HTTP.get(exc.code(), 500)
                if status == 500:
                    answers.errors.append(f"{exc.code()}: {exc.details()}")
                    continue
            answers.got.append((status, time.monotonic() - sent, None))


_HTTP = {grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.UNAVAILABLE: 503}


def test_a_tenant_flooding_a_gateway_is_refused_there_and_the_others_are_all_served(
    pair: Cluster,
) -> None:
    gateway = pair.gateway
    assert gateway is not None
    url = gateway.url
    auth = {"Authorization": f"Bearer {GATEWAY_KEY}"}
    with httpx.Client(base_url=url, headers=auth, timeout=10) as admin:
        assert admin.post("/admin/plans", json=PLAN).status_code == 201
        tenants = {name: _tenant(admin, name) for name in ("a", "b", "c")}
        deadline = time.monotonic() + 15  # the gateway has read the node's announcement
        while admin.post("/v2/models/doubler/infer", json={}).status_code == 404:
            assert time.monotonic() < deadline, "the gateway never saw the node's models"
            time.sleep(0.2)
    flooders = [Answers() for _ in range(FLOOD_CONNECTIONS)]
    calm = {name: Answers() for name in ("b", "c")}
    stop = threading.Event()
    flood = threading.Thread(target=_flood, args=(url, tenants["a"][1], flooders, stop))
    flood.start()
    try:
        time.sleep(0.5)  # the flood is under way, its first bursts refused
        start = time.monotonic()
        threads = [
            threading.Thread(target=_calm, args=(url, tenants[t][1], calm[t], start)) for t in calm
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=SECONDS + 20)
        flooded_for = time.monotonic() - start + 0.5
    finally:
        stop.set()
        flood.join(timeout=HOLD_S + 35)
    assert not flood.is_alive()
    node = pair.nodes["a"]
    node_shares = _sample(httpx.get(f"{node.url}/metrics", timeout=5).text,
                          "modelgate_tenant_admission_share")  # fmt: skip

    a = check_flood_outcome(calm, flooders)  # A held by the gateway's back-pressure
    print(
        f"\nA through the gateway: {len(a)} answers on {FLOOD_CONNECTIONS} connections in "
        f"{flooded_for:.1f} s, {sum(1 for got in a if got[0] == 429)} refused (429); "
        f"B and C: {sum(len(c.got) for c in calm.values())} requests, all 200; "
        f"the node's shares: {node_shares}"
    )
    # the node told the tenants apart: each one's share; a call the gateway merged from
    # several tenants' requests names none, and counts under the gateway's key
    seen = set(node_shares)
    named = {f'{{tenant="{tenant_id}"}}' for tenant_id, _ in tenants.values()}
    assert named <= seen <= named | {f'{{tenant="{ADMIN_TENANT}"}}'}, seen
