"""A gateway and a node in one process (their own ports), the node announced in the
machine's Redis under a key prefix of the test's own: what the gateway answers for a model
that prefers a GPU when only CPU nodes are up, and how it reports its nodes' health."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from pydantic import SecretStr

from modelgate.server import Server
from tests.api.conftest import running_server
from tests.conftest import FIXTURE_MODELS, REDIS_URL

pytestmark = pytest.mark.asyncio

NODE_KEY = "gateway-test-node-key-0123456789"
ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


@dataclass
class Cluster:
    """A node and a gateway in front of it, and a client of the gateway."""

    node: Server
    gateway: Server
    client: httpx.AsyncClient
    #: the Redis key prefix they share (removed afterwards)
    prefix: str


@asynccontextmanager
async def _cluster(
    tmp_path: Path, repository: Path, *, node: dict[str, Any] | None = None, **shared: Any
) -> AsyncIterator[Cluster]:
    """A node serving ``repository`` (with ``node``'s settings, id ``n-1`` unless they say
    otherwise) and a gateway, sharing the machine's Redis under a prefix of their own and
    ``shared``'s settings; every key under the prefix is removed at the end."""
    prefix = f"mgtest:{secrets.token_hex(6)}:"
    common = {
        "redis_url": SecretStr(REDIS_URL),
        "redis_key_prefix": prefix,
        "cluster_refresh_seconds": 0.2,
        **shared,
    }
    try:
        async with (
            running_server(
                tmp_path / "node",
                role="node",
                model_repository=repository,
                auth="required",
                admin_key=SecretStr(NODE_KEY),
                **{"node_id": "n-1", **(node or {})},
                **common,
            ) as node_server,
            running_server(
                tmp_path / "gateway", role="gateway", node_key=SecretStr(NODE_KEY), **common
            ) as gateway,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as client,
        ):
            yield Cluster(node_server, gateway, client, prefix)
    finally:
        with redis.Redis.from_url(REDIS_URL, socket_timeout=5) as r:
            for key in r.scan_iter(f"{prefix}*"):
                r.delete(key)


async def test_a_gpu_model_answered_by_a_cpu_node_says_so(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    shutil.copytree(FIXTURE_MODELS / "doubler", repository / "doubler")
    manifest = repository / "doubler" / "model.yaml"
    manifest.write_text(manifest.read_text() + "hardware: {prefer: gpu}\n")
    async with _cluster(
        tmp_path, repository, node={"node_id": "cpu-1", "node_hardware": "cpu"}
    ) as cluster:
        answer = await cluster.client.post("/v2/models/doubler/infer", json=ROW)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["parameters"]["hardware_fallback"] == "cpu"
        assert body["outputs"][0]["data"] == [3.0, 6.0, 9.0, 12.0]
        metadata = (await cluster.client.get("/v2/models/doubler")).json()
        assert metadata["versions"] == ["1", "2"]


async def test_a_node_does_not_meter_or_record_its_gateways_call_again(tmp_path: Path) -> None:
    """The gateway meters the call and keeps its prediction for feedback; the node, called
    with its admin key, writes neither a second time (core/gateway/node_calls.py)."""
    repository = tmp_path / "models"
    shutil.copytree(FIXTURE_MODELS / "doubler", repository / "doubler")
    manifest = repository / "doubler" / "model.yaml"
    manifest.write_text(manifest.read_text() + "feedback: {enabled: true}\n")
    # nothing is written during the test: what each server recorded stays pending
    async with _cluster(
        tmp_path, repository, usage_flush_seconds=60, feedback_flush_seconds=60
    ) as cluster:
        answer = await cluster.client.post("/v2/models/doubler/infer", json=ROW)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == [3.0, 6.0, 9.0, 12.0]
        gateway, node = cluster.gateway.components, cluster.node.components
        assert gateway is not None and node is not None
        assert gateway.usage is not None and node.usage is not None
        assert gateway.feedback is not None and node.feedback is not None
        assert gateway.usage.pending == 1
        assert gateway.feedback.pending == 1
        assert node.usage.pending == 0
        assert node.feedback.pending == 0


async def test_a_models_rate_limit_counts_a_request_through_a_gateway_once(
    tmp_path: Path,
) -> None:
    """The gateway enforces the model's own rate limit; the node, sharing its Redis and key
    prefix, does not count the forwarded call against the same bucket a second time (which
    halved the limit)."""
    repository = tmp_path / "models"
    shutil.copytree(FIXTURE_MODELS / "doubler", repository / "doubler")
    manifest = repository / "doubler" / "model.yaml"
    manifest.write_text(
        manifest.read_text() + "rate_limit: {requests_per_second: 0.001, burst: 4}\n"
    )
    async with _cluster(tmp_path, repository) as cluster:
        statuses = [
            (await cluster.client.post("/v2/models/doubler/infer", json=ROW)).status_code
            for _ in range(5)
        ]
        assert statuses == [200, 200, 200, 200, 429]  # the burst of 4, then the limit


async def test_a_node_does_not_cache_its_gateways_answer_a_second_time(tmp_path: Path) -> None:
    """The gateway looks a cached model's answer up and keeps it; the node it forwards a miss
    to neither looks it up nor keeps a copy of its own in the shared Redis."""
    repository = tmp_path / "models"
    shutil.copytree(FIXTURE_MODELS / "cached-doubler", repository / "cached-doubler")
    manifest = repository / "cached-doubler" / "model.yaml"
    manifest.write_text(manifest.read_text().replace("shareable: true", "shareable: false"))
    async with _cluster(tmp_path, repository) as cluster:
        first = await cluster.client.post("/v2/models/cached-doubler/infer", json=ROW)
        assert first.status_code == 200, first.text
        assert first.headers["x-modelgate-cache"] == "miss"
        cached = f"{cluster.prefix}cache:*"
        with redis.Redis.from_url(REDIS_URL, socket_timeout=5) as r:
            for _ in range(100):  # the entry is written in the background
                if list(r.scan_iter(cached)):
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # time for a second entry, were one coming
            assert len(list(r.scan_iter(cached))) == 1  # the gateway's
        second = await cluster.client.post("/v2/models/cached-doubler/infer", json=ROW)
        assert second.headers["x-modelgate-cache"] == "hit"
        assert second.json()["outputs"] == first.json()["outputs"]


async def test_concurrent_requests_reach_the_node_in_fewer_calls(tmp_path: Path) -> None:
    """The gateway merges concurrent requests for one version into one node call (one call
    in flight here, so the rest queue behind it): the node serves fewer calls than the
    gateway answered requests, and every client gets the answer to its own inputs (the
    default version triples them)."""
    repository = tmp_path / "models"
    shutil.copytree(FIXTURE_MODELS / "doubler", repository / "doubler")
    async with _cluster(tmp_path, repository, gateway_merge_calls=1) as cluster:
        requests = 24

        async def ask(i: int) -> list[float]:
            row = {"inputs": [{**ROW["inputs"][0], "data": [i, i + 1, i + 2, i + 3]}]}
            answer = await cluster.client.post("/v2/models/doubler/infer", json=row)
            assert answer.status_code == 200, answer.text
            data: list[float] = answer.json()["outputs"][0]["data"]
            return data

        answers = await asyncio.gather(*(ask(i) for i in range(requests)))
        assert answers == [[3.0 * (i + k) for k in range(4)] for i in range(requests)]
        node, gateway = cluster.node.components, cluster.gateway.components
        assert node is not None and gateway is not None
        served = node.registry.get("doubler", None)
        answered = gateway.registry.get("doubler", None)
        assert served is not None and answered is not None
        assert answered.stats.success.count == requests
        assert served.stats.inference_count == requests  # every row reached the node once
        assert served.stats.success.count < requests  # in fewer calls
