"""A gateway started while a model's node pool is at zero (core/gateway/cold_start.py, the
catalogue of models served recently in storage/redis/node_directory.py): a node serves the
fixture models and leaves, announced in the machine's Redis under a key prefix of the
test's own; a gateway started afterwards, with no node up, makes a request for a model
announced earlier wait for a node and answers 503 with Retry-After, and answers 404 at
once for a model never announced. Without the catalogue (its TTL 0) it answered 404 for
both, as every gateway did before."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from modelgate.storage.redis.client import create_redis_client
from modelgate.storage.redis.node_directory import RedisNodeDirectory
from tests.api.conftest import running_server
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.asyncio

NODE_KEY = "zero-pool-test-node-key-0123456789"
ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


async def _answers(tmp_path: Path, prefix: str, **gateway: object) -> tuple[int, str, int]:
    """(status, Retry-After, status for an unknown model) of a fresh gateway."""
    async with (
        running_server(
            tmp_path,
            role="gateway",
            node_key=SecretStr(NODE_KEY),
            redis_url=SecretStr(REDIS_URL),
            redis_key_prefix=prefix,
            cluster_refresh_seconds=0.2,
            cold_start_wait_seconds=0.5,
            **gateway,
        ) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}", timeout=30) as client,
    ):
        waited = await client.post("/v2/models/doubler/infer", json=ROW)
        unknown = await client.post("/v2/models/never-announced/infer", json=ROW)
        return waited.status_code, waited.headers.get("retry-after", ""), unknown.status_code


async def test_a_fresh_gateway_knows_the_models_of_a_pool_at_zero(
    tmp_path: Path, redis_prefix: str
) -> None:
    common = {
        "redis_url": SecretStr(REDIS_URL),
        "redis_key_prefix": redis_prefix,
        "cluster_refresh_seconds": 0.2,
    }
    async with running_server(
        tmp_path / "node",
        role="node",
        auth="required",
        admin_key=SecretStr(NODE_KEY),
        node_id="n-1",
        **common,
    ):
        pass  # announced at start; on stop it drains and removes its entry: the pool is at zero
    client = create_redis_client(REDIS_URL, connect_timeout_s=5.0, read_timeout_s=5.0)
    directory = RedisNodeDirectory(client, prefix=redis_prefix)
    try:
        assert await directory.nodes() == []
        assert "doubler" in await directory.served()
    finally:
        await directory.close()

    status, retry_after, unknown = await _answers(tmp_path / "gateway", redis_prefix)
    assert (status, unknown) == (503, 404)
    assert retry_after

    # without the catalogue the gateway does not know the model: 404, as before
    status, _, unknown = await _answers(
        tmp_path / "gateway-0", redis_prefix, served_models_ttl_seconds=0
    )
    assert (status, unknown) == (404, 404)
