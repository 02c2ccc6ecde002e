"""``Client`` and ``AsyncClient`` against ``modelgate_client.testing.MockTransport``: what a
user's own tests would do, and what each call sends."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from modelgate_client import AsyncClient, Client, FeedbackItem, NotFoundError
from modelgate_client.testing import MockTransport

URL = "http://modelgate.test"


def _transport() -> MockTransport:
    transport = MockTransport()
    transport.add_model(
        "doubler",
        lambda inputs: {"y": inputs["x"] * 2, "n": np.array([inputs["x"].size], np.int64)},
    )
    transport.add_model("echo", lambda inputs: {"text": inputs["text"]}, version="3")
    transport.add_embeddings("embedder", lambda text: [float(len(text)), 1.0])
    return transport


@pytest.mark.parametrize("binary", [True, False])
def test_infer_arrays_in_and_out(binary: bool) -> None:
    transport = _transport()
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    with Client(URL, transport=transport) as client:
        result = client.infer("doubler", {"x": x}, binary=binary)
    assert result["y"].dtype == np.float32 and result["y"].shape == (3, 4)
    np.testing.assert_array_equal(result["y"], x * 2)
    assert result["n"].tolist() == [12] and result.datatypes == {"y": "FP32", "n": "INT64"}
    assert result.request_id == "mock-1" and result.model_version == "1"
    sent = transport.requests[0]
    assert sent.url.path == "/v2/models/doubler/infer"
    if binary:
        assert sent.headers["content-type"] == "application/octet-stream"
        header = json.loads(sent.content[: int(sent.headers["inference-header-content-length"])])
        assert header["inputs"][0]["parameters"] == {"binary_data_size": 48}
        assert header["parameters"] == {"binary_data_output": True}
    else:
        assert sent.headers["content-type"] == "application/json"
        body = json.loads(sent.content)
        assert body["inputs"][0]["data"] == x.reshape(-1).tolist()


def test_bytes_tensors_and_a_chosen_version_and_output() -> None:
    transport = _transport()
    texts = np.array(["héllo", "", "a b"])
    with Client(URL, transport=transport) as client:
        result = client.infer("echo", {"text": texts}, version=3, outputs=["text"])
        as_json = client.infer("echo", {"text": texts}, version="3", binary=False)
    assert result["text"].tolist() == [b"h\xc3\xa9llo", b"", b"a b"]
    assert as_json["text"].tolist() == result["text"].tolist()
    assert transport.requests[0].url.path == "/v2/models/echo/versions/3/infer"
    header_length = int(transport.requests[0].headers["inference-header-content-length"])
    header = json.loads(transport.requests[0].content[:header_length])
    assert header["outputs"] == [{"name": "text", "parameters": {"binary_data": True}}]


def test_non_utf8_bytes_need_binary() -> None:
    with Client(URL, transport=_transport()) as client:
        blob = np.array([b"\xff\xfe"], dtype=object)
        assert client.infer("echo", {"text": blob}, version=3)["text"][0] == b"\xff\xfe"
        with pytest.raises(ValueError, match="binary=True"):
            client.infer("echo", {"text": blob}, version=3, binary=False)


def test_unknown_model_is_not_found() -> None:
    with Client(URL, transport=_transport()) as client, pytest.raises(NotFoundError) as caught:
        client.infer("nope", {"x": np.ones(1)})
    assert caught.value.status == 404 and "nope" in caught.value.message


def test_embeddings_models_metadata_and_health() -> None:
    with Client(URL, transport=_transport()) as client:
        found = client.embeddings("embedder", ["ab", "abcd"])
        assert found.vectors == [[2.0, 1.0], [4.0, 1.0]] and found.model == "embedder"
        assert sorted(m.id for m in client.models()) == ["doubler", "echo"]
        assert client.model_metadata("echo").versions == ["3"]
        assert client.model_ready("doubler") and client.is_live() and client.is_ready()
        with pytest.raises(NotFoundError) as caught:
            client.embeddings("nope", "x")
    assert caught.value.code == "model_not_found"


def test_api_key_from_the_argument_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = _transport()
    monkeypatch.setenv("MODELGATE_API_KEY", "from-env")
    monkeypatch.setenv("MODELGATE_BASE_URL", "http://env.test/")
    with Client(transport=transport) as client:
        client.models()
        assert client.base_url == "http://env.test"
    with Client(URL, api_key="given", transport=transport) as client:
        client.models()
    monkeypatch.delenv("MODELGATE_API_KEY")
    with Client(URL, transport=transport) as client:
        client.models()
    headers = [r.headers.get("authorization") for r in transport.requests]
    assert headers == ["Bearer from-env", "Bearer given", None]
    assert transport.requests[0].url.host == "env.test"


def test_every_call_carries_a_timeout_and_infer_tells_the_server() -> None:
    transport = _transport()
    with Client(URL, transport=transport, timeout=7.5) as client:
        client.models()
        client.infer("doubler", {"x": np.ones(1)}, timeout=2)
    first, second = (r.extensions["timeout"] for r in transport.requests)
    assert first["read"] == 7.5 and second["read"] == 2
    assert transport.requests[1].headers["x-request-timeout-ms"] == "2000"


def test_a_shared_http_client_is_used_and_left_open() -> None:
    transport = _transport()
    shared = httpx.Client(transport=transport)
    with Client(URL, http_client=shared) as client:
        client.models()
    assert not shared.is_closed
    shared.close()
    assert len(transport.requests) == 1


def test_feedback_bodies() -> None:
    transport = _transport()
    transport.add_route("POST", "/v1/feedback", lambda r: httpx.Response(200, json={"accepted": 2}))
    with Client(URL, transport=transport) as client:
        assert client.feedback("req-1", 1, row=2) == 2
        client.feedback("req-1", labels=[0, 1])
        client.feedback(items=[FeedbackItem("a", label=1), FeedbackItem("b", labels=[0])])
        with pytest.raises(ValueError, match="either label or labels"):
            client.feedback("req-1")
    bodies = [json.loads(r.content) for r in transport.requests]
    assert bodies == [
        {"request_id": "req-1", "label": 1, "row": 2},
        {"request_id": "req-1", "labels": [0, 1]},
        {"items": [{"request_id": "a", "label": 1}, {"request_id": "b", "labels": [0]}]},
    ]


def test_usage_sends_only_the_filters_given() -> None:
    transport = _transport()
    row = {"day": "2026-12-07", "requests": 3, "errors": 1, "rows": 3, "tokens": 0, "cost": 0.25,
           "latency_ms_avg": 1.5, "latency_ms_max": 2.0, "compute_seconds": 0.1}  # fmt: skip
    transport.add_route("GET", "/admin/usage", {"currency": "EUR", "rows": [row, row]})
    with Client(URL, transport=transport) as client:
        report = client.usage(model="m", since="2026-12-01")
    assert report.currency == "EUR" and report.total_requests == 6 and report.total_cost == 0.5
    assert report.rows[0].tenant_id is None and report.rows[0].errors == 1
    assert dict(transport.requests[0].url.params) == {"model": "m", "since": "2026-12-01"}


def test_deployments_send_their_bodies_and_keys() -> None:
    transport = _transport()
    doc = {"model": "m", "revision": 4, "stage": "split", "default_version": 2,
           "weights": [], "split": [], "canary": None, "shadow": None}  # fmt: skip
    for method, path in (("PUT", ""), ("POST", "/promote"), ("POST", "/rollback")):
        transport.add_route(method, f"/admin/models/m/deployment{path}", doc)
    with Client(URL, transport=transport) as client:
        put = client.deployments.put("m", 2, split=[{"version": 1, "weight": 100}])
        client.deployments.promote("m", 3, idempotency_key="mine")
        client.deployments.rollback("m")
    assert put.revision == 4 and put.default_version == 2
    put_sent, promote, rollback = transport.requests
    assert json.loads(put_sent.content) == {
        "default_version": 2, "split": [{"version": 1, "weight": 100}], "canary": None,
        "shadow": None,
    }  # fmt: skip
    assert json.loads(promote.content) == {"version": 3}
    assert promote.headers["idempotency-key"] == "mine"
    assert rollback.headers["idempotency-key"].startswith("mgc-")


async def test_the_async_client_mirrors_the_sync_one() -> None:
    transport = _transport()
    async with AsyncClient(URL, transport=transport) as client:
        result = await client.infer("doubler", {"x": np.array([1, 2], np.int32)})
        assert result["y"].tolist() == [2, 4] and result["y"].dtype == np.int32
        assert (await client.embeddings("embedder", "abc")).vectors == [[3.0, 1.0]]
        assert await client.is_ready()
        with pytest.raises(NotFoundError):
            await client.model_metadata("nope")
