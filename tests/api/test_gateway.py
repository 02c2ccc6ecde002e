"""A gateway and a node in one process (their own ports), the node announced in the
machine's Redis under a key prefix of the test's own: what the gateway answers for a model
that prefers a GPU when only CPU nodes are up, and how it reports its nodes' health."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from pathlib import Path

import httpx
import pytest
import redis
from pydantic import SecretStr

from tests.api.conftest import running_server
from tests.conftest import FIXTURE_MODELS, REDIS_URL

pytestmark = pytest.mark.asyncio

NODE_KEY = "gateway-test-node-key-0123456789"
ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


async def test_a_gpu_model_answered_by_a_cpu_node_says_so(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    shutil.copytree(FIXTURE_MODELS / "doubler", repository / "doubler")
    manifest = repository / "doubler" / "model.yaml"
    manifest.write_text(manifest.read_text() + "hardware: {prefer: gpu}\n")
    prefix = f"mgtest:{secrets.token_hex(6)}:"
    shared = {
        "redis_url": SecretStr(REDIS_URL),
        "redis_key_prefix": prefix,
        "cluster_refresh_seconds": 0.2,
    }
    try:
        async with (
            running_server(
                tmp_path / "node",
                role="node",
                node_id="cpu-1",
                node_hardware="cpu",
                model_repository=repository,
                auth="required",
                admin_key=SecretStr(NODE_KEY),
                **shared,
            ),
            running_server(
                tmp_path / "gateway", role="gateway", node_key=SecretStr(NODE_KEY), **shared
            ) as gateway,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as client,
        ):
            answer = await client.post("/v2/models/doubler/infer", json=ROW)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["parameters"]["hardware_fallback"] == "cpu"
            assert body["outputs"][0]["data"] == [3.0, 6.0, 9.0, 12.0]
            metadata = (await client.get("/v2/models/doubler")).json()
            assert metadata["versions"] == ["1", "2"]
    finally:
        with redis.Redis.from_url(REDIS_URL, socket_timeout=5) as r:
            for key in r.scan_iter(f"{prefix}*"):
                r.delete(key)


async def test_a_node_does_not_meter_or_record_its_gateways_call_again(tmp_path: Path) -> None:
    """The gateway meters the call and keeps its prediction for feedback; the node, called
    with its admin key, writes neither a second time (core/gateway/node_calls.py)."""
    repository = tmp_path / "models"
    shutil.copytree(FIXTURE_MODELS / "doubler", repository / "doubler")
    manifest = repository / "doubler" / "model.yaml"
    manifest.write_text(manifest.read_text() + "feedback: {enabled: true}\n")
    prefix = f"mgtest:{secrets.token_hex(6)}:"
    shared = {
        "redis_url": SecretStr(REDIS_URL),
        "redis_key_prefix": prefix,
        "cluster_refresh_seconds": 0.2,
        # nothing is written during the test: what each server recorded stays pending
        "usage_flush_seconds": 60,
        "feedback_flush_seconds": 60,
    }
    try:
        async with (
            running_server(
                tmp_path / "node",
                role="node",
                node_id="n-1",
                model_repository=repository,
                auth="required",
                admin_key=SecretStr(NODE_KEY),
                **shared,
            ) as node,
            running_server(
                tmp_path / "gateway", role="gateway", node_key=SecretStr(NODE_KEY), **shared
            ) as gateway,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as client,
        ):
            answer = await client.post("/v2/models/doubler/infer", json=ROW)
            assert answer.status_code == 200, answer.text
            assert answer.json()["outputs"][0]["data"] == [3.0, 6.0, 9.0, 12.0]
            assert gateway.components is not None and node.components is not None
            assert gateway.components.usage is not None and node.components.usage is not None
            assert gateway.components.feedback is not None
            assert node.components.feedback is not None
            assert gateway.components.usage.pending == 1
            assert gateway.components.feedback.pending == 1
            assert node.components.usage.pending == 0
            assert node.components.feedback.pending == 0
    finally:
        with redis.Redis.from_url(REDIS_URL, socket_timeout=5) as r:
            for key in r.scan_iter(f"{prefix}*"):
                r.delete(key)


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
    prefix = f"mgtest:{secrets.token_hex(6)}:"
    shared = {
        "redis_url": SecretStr(REDIS_URL),
        "redis_key_prefix": prefix,
        "cluster_refresh_seconds": 0.2,
    }
    try:
        async with (
            running_server(
                tmp_path / "node",
                role="node",
                node_id="n-1",
                model_repository=repository,
                auth="required",
                admin_key=SecretStr(NODE_KEY),
                **shared,
            ),
            running_server(
                tmp_path / "gateway", role="gateway", node_key=SecretStr(NODE_KEY), **shared
            ) as gateway,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as client,
        ):
            statuses = [
                (await client.post("/v2/models/doubler/infer", json=ROW)).status_code
                for _ in range(5)
            ]
            assert statuses == [200, 200, 200, 200, 429]  # the burst of 4, then the limit
    finally:
        with redis.Redis.from_url(REDIS_URL, socket_timeout=5) as r:
            for key in r.scan_iter(f"{prefix}*"):
                r.delete(key)


async def test_a_node_does_not_cache_its_gateways_answer_a_second_time(tmp_path: Path) -> None:
    """The gateway looks a cached model's answer up and keeps it; the node it forwards a miss
    to neither looks it up nor keeps a copy of its own in the shared Redis."""
    repository = tmp_path / "models"
    shutil.copytree(FIXTURE_MODELS / "cached-doubler", repository / "cached-doubler")
    manifest = repository / "cached-doubler" / "model.yaml"
    manifest.write_text(manifest.read_text().replace("shareable: true", "shareable: false"))
    prefix = f"mgtest:{secrets.token_hex(6)}:"
    shared = {
        "redis_url": SecretStr(REDIS_URL),
        "redis_key_prefix": prefix,
        "cluster_refresh_seconds": 0.2,
    }
    try:
        async with (
            running_server(
                tmp_path / "node",
                role="node",
                node_id="n-1",
                model_repository=repository,
                auth="required",
                admin_key=SecretStr(NODE_KEY),
                **shared,
            ),
            running_server(
                tmp_path / "gateway", role="gateway", node_key=SecretStr(NODE_KEY), **shared
            ) as gateway,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as client,
        ):
            first = await client.post("/v2/models/cached-doubler/infer", json=ROW)
            assert first.status_code == 200, first.text
            assert first.headers["x-modelgate-cache"] == "miss"
            with redis.Redis.from_url(REDIS_URL, socket_timeout=5) as r:
                for _ in range(100):  # the entry is written in the background
                    entries = list(r.scan_iter(f"{prefix}cache:*"))
                    if entries:
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.3)  # time for a second entry, were one coming
                assert len(list(r.scan_iter(f"{prefix}cache:*"))) == 1  # the gateway's
            second = await client.post("/v2/models/cached-doubler/infer", json=ROW)
            assert second.headers["x-modelgate-cache"] == "hit"
            assert second.json()["outputs"] == first.json()["outputs"]
    finally:
        with redis.Redis.from_url(REDIS_URL, socket_timeout=5) as r:
            for key in r.scan_iter(f"{prefix}*"):
                r.delete(key)
