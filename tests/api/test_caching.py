"""The result cache through the real server, over REST and gRPC (the fixture model
``cached-doubler``: ``cache: {ttl_seconds: 300, shareable: true, stale_seconds: 60}``),
GET inference for HTTP caches with its validators, its bad inputs, and the cache's metrics.
With access control on, two tenants' requests of a model that is not shareable never meet
in the cache. A Redis-backed server shares one cache between two servers."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import pytest_asyncio
import redis
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelgate.api.rest.edge import MAX_QUERY_INPUT
from modelgate.server import Server
from tests.api.conftest import running_server
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.asyncio(loop_scope="module")

MODEL = "cached-doubler"
INFER = f"/v2/models/{MODEL}/infer"


def body(*values: float) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": list(values)}]}


def query(doc: dict[str, Any]) -> str:
    """The canonical GET form: compact sorted JSON, base64url without padding."""
    raw = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def grpc_request(*values: float) -> Any:
    tensor = service_pb2.ModelInferRequest().InferInputTensor(
        name="x", datatype="FP32", shape=[1, 4]
    )
    tensor.contents.fp32_contents.extend(values)
    return service_pb2.ModelInferRequest(model_name=MODEL, inputs=[tensor])


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    async with running_server(tmp_path_factory.mktemp("data")) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as client:
        yield client


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stub(server: Server) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


async def executions(http: httpx.AsyncClient) -> int:
    (stats,) = (await http.get(f"/v2/models/{MODEL}/stats")).json()["model_stats"]
    return int(stats["execution_count"])


async def test_rest_says_miss_then_hit_and_the_hit_skips_the_model(
    http: httpx.AsyncClient,
) -> None:
    first = await http.post(INFER, json=body(1, 2, 3, 4))
    assert first.status_code == 200, first.text
    ran = await executions(http)
    second = await http.post(INFER, json=body(1, 2, 3, 4))
    assert (first.headers["x-modelgate-cache"], second.headers["x-modelgate-cache"]) == (
        "miss",
        "hit",
    )
    assert second.json() == first.json()
    assert second.json()["outputs"][0]["data"] == [2, 4, 6, 8]
    assert await executions(http) == ran
    # a model without a cache section says nothing
    plain = await http.post("/v2/models/doubler/infer", json=body(1, 2, 3, 4))
    assert "x-modelgate-cache" not in plain.headers


async def test_grpc_says_it_in_a_response_parameter_and_shares_the_entry(
    http: httpx.AsyncClient, stub: Any
) -> None:
    await http.post(INFER, json=body(5, 6, 7, 8))
    answer = await stub.ModelInfer(grpc_request(5, 6, 7, 8))
    assert answer.parameters["cache"].string_param == "hit"
    assert np.frombuffer(answer.raw_output_contents[0], "<f4").tolist() == [10, 12, 14, 16]
    bypass = await stub.ModelInfer(
        grpc_request(5, 6, 7, 8), metadata=(("cache-control", "no-cache"),)
    )
    assert bypass.parameters["cache"].string_param == "miss"
    fresh = await stub.ModelInfer(grpc_request(9, 9, 9, 1))
    assert fresh.parameters["cache"].string_param == "miss"


async def test_no_cache_and_no_store_headers(http: httpx.AsyncClient) -> None:
    await http.post(INFER, json=body(1, 1, 1, 2))
    ran = await executions(http)
    bypass = await http.post(INFER, json=body(1, 1, 1, 2), headers={"cache-control": "no-cache"})
    assert bypass.headers["x-modelgate-cache"] == "miss"
    assert await executions(http) == ran + 1
    kept_out = await http.post(INFER, json=body(1, 1, 1, 3), headers={"cache-control": "no-store"})
    assert kept_out.headers["x-modelgate-cache"] == "miss"
    again = await http.post(INFER, json=body(1, 1, 1, 3))
    assert again.headers["x-modelgate-cache"] == "miss"
    named = {**body(1, 1, 1, 4), "parameters": {"subject": "user-1842"}}
    await http.post(INFER, json=named)
    assert (await http.post(INFER, json=body(1, 1, 1, 4))).headers["x-modelgate-cache"] == "miss"


async def test_get_inference_answers_with_validators_and_304(http: httpx.AsyncClient) -> None:
    url = f"{INFER}?input={query(body(3, 1, 4, 1))}"
    first = await http.get(url)
    assert first.status_code == 200, first.text
    assert first.json()["outputs"][0]["data"] == [6, 2, 8, 2]
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert first.headers["cache-control"] == "public, max-age=300"
    assert first.headers["vary"] == "Authorization, X-Api-Key"
    again = await http.get(url)
    assert again.headers["x-modelgate-cache"] == "hit"
    assert again.headers["etag"] == etag  # the same answer, the same tag
    assert again.content == first.content
    unchanged = await http.get(url, headers={"if-none-match": etag})
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    assert unchanged.headers["etag"] == etag
    changed = await http.get(url, headers={"if-none-match": '"other"'})
    assert changed.status_code == 200
    # a POST of the same request meets the entry the GET made
    posted = await http.post(INFER, json=body(3, 1, 4, 1))
    assert posted.headers["x-modelgate-cache"] == "hit"
    versioned = await http.get(
        f"/v2/models/{MODEL}/versions/1/infer?input={query(body(3, 1, 4, 1))}"
    )
    assert versioned.status_code == 200 and versioned.headers["etag"] == etag


async def test_get_answers_that_must_not_be_kept_say_no_store(http: httpx.AsyncClient) -> None:
    named = {**body(2, 7, 1, 8), "parameters": {"subject": "user-1842"}}
    answer = await http.get(f"{INFER}?input={query(named)}")
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "private, no-store"
    told = await http.get(
        f"{INFER}?input={query(body(2, 7, 1, 9))}", headers={"cache-control": "no-store"}
    )
    assert told.headers["cache-control"] == "private, no-store"


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        (f"{INFER}", 400, "missing query parameter 'input'"),
        (f"{INFER}?input=", 400, "the request body is empty"),
        (f"{INFER}?input=bm9wZQ", 400, "malformed JSON"),
        (f"{INFER}?input=a*b", 400, "not base64url"),
        (f"{INFER}?input=abcde", 400, "not base64url"),
        (f"{INFER}?input=e30&input=e30", 400, "given twice"),
        (f"{INFER}?input=e30&x=1", 400, "unknown query parameter"),
        (f"{INFER}?input=" + query({"inputs": "nope"}), 400, "inputs"),
        (f"{INFER}?input=" + "A" * (MAX_QUERY_INPUT + 4), 413, "POST the request instead"),
        ("/v2/models/doubler/infer?input=e30", 405, "not allowed"),
        ("/v2/models/nope/infer?input=e30", 404, "unknown model"),
    ],
)
async def test_bad_get_requests_answer_4xx_in_the_oip_shape(
    http: httpx.AsyncClient, path: str, status: int, words: str
) -> None:
    answer = await http.get(path)
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {"error"}
    assert words in answer.json()["error"]


async def test_hits_misses_and_stores_are_counted_per_model(http: httpx.AsyncClient) -> None:
    for _ in range(3):
        await http.post(INFER, json=body(4, 4, 4, 4))
    counts = {
        (sample.name, sample.labels.get("model")): sample.value
        for family in text_string_to_metric_families((await http.get("/metrics")).text)
        for sample in family.samples
        if sample.name.startswith("modelgate_cache_")
    }
    hits = counts[("modelgate_cache_hits_total", MODEL)]
    misses = counts[("modelgate_cache_misses_total", MODEL)]
    assert hits >= 2 and misses >= 1
    assert counts[("modelgate_cache_stores_total", MODEL)] >= 1
    assert counts[("modelgate_cache_evictions_total", MODEL)] == 0
    assert ("modelgate_cache_hits_total", "doubler") not in counts


# -- access control: tenants -------------------------------------------------------------
ADMIN = "admin-" + "c" * 24


async def test_tenants_do_not_share_entries_of_a_model_that_is_not_shareable(
    tmp_path: Path,
) -> None:
    from tests.conftest import FIXTURE_MODELS

    repository = tmp_path / "models"
    (repository / "private-doubler" / "1").mkdir(parents=True)
    source = Path(FIXTURE_MODELS) / MODEL
    text = (source / "model.yaml").read_text().replace("shareable: true", "shareable: false")
    (repository / "private-doubler" / "model.yaml").write_text(text)
    (repository / "private-doubler" / "1" / "model.py").write_text(
        (source / "1" / "model.py").read_text()
    )
    async with (
        running_server(
            tmp_path / "data", model_repository=repository, auth="required", admin_key=ADMIN
        ) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as client,
    ):
        admin = {"Authorization": f"Bearer {ADMIN}"}
        plan = await client.post("/admin/plans", json={"name": "open"}, headers=admin)
        assert plan.status_code == 201, plan.text
        keys = []
        for name in ("acme", "globex"):
            tenant = {"name": name, "plan": "open"}
            made = await client.post("/admin/tenants", json=tenant, headers=admin)
            assert made.status_code == 201, made.text
            key = await client.post(
                f"/admin/tenants/{made.json()['id']}/keys",
                json={"name": "k", "scopes": ["infer"]},
                headers=admin,
            )
            assert key.status_code == 201, key.text
            keys.append({"Authorization": f"Bearer {key.json()['secret']}"})
        url = "/v2/models/private-doubler/infer"
        seen = [
            (await client.post(url, json=body(1, 2, 3, 4), headers=who)).headers[
                "x-modelgate-cache"
            ]
            for who in (keys[0], keys[1], keys[0], keys[1])
        ]
        assert seen == ["miss", "miss", "hit", "hit"]
        get = await client.get(f"{url}?input={query(body(1, 2, 3, 4))}", headers=keys[0])
        assert get.headers["cache-control"].startswith("private, max-age=")
        no_key = await client.get(f"{url}?input={query(body(1, 2, 3, 4))}")
        assert no_key.status_code == 401


# -- Redis: one cache for every replica -------------------------------------------------
async def test_two_servers_share_one_cache_in_redis(tmp_path: Path, redis_prefix: str) -> None:
    shared = {"redis_url": REDIS_URL, "redis_key_prefix": redis_prefix}
    async with (
        running_server(tmp_path / "one", **shared) as one,
        running_server(tmp_path / "two", **shared) as two,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{one.http_port}") as first,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{two.http_port}") as second,
    ):
        answer = await first.post(INFER, json=body(8, 6, 7, 5))
        assert answer.headers["x-modelgate-cache"] == "miss"
        assert one.components is not None and one.components.service.cache is not None
        await one.components.service.cache.store.flush()  # type: ignore[attr-defined]
        shared_hit = await second.post(INFER, json=body(8, 6, 7, 5))
        assert shared_hit.headers["x-modelgate-cache"] == "hit"
        assert shared_hit.json()["outputs"] == answer.json()["outputs"]
    with redis.Redis.from_url(REDIS_URL, socket_timeout=5) as client:
        assert list(client.scan_iter(match=f"{redis_prefix}cache:*"))


async def test_a_redis_outage_is_a_miss_never_an_error(tmp_path: Path) -> None:
    unreachable = {"redis_url": "redis://127.0.0.1:9/0", "redis_timeout_seconds": 0.2}
    async with (
        running_server(tmp_path / "data", **unreachable) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as client,
    ):
        for _ in range(2):
            answer = await client.post(INFER, json=body(1, 2, 3, 4))
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-modelgate-cache"] == "miss"
