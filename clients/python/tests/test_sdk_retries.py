"""Retries: which calls are tried again, after how long (``Retry-After`` first), within
which budget; and the idempotency key that makes a retried submission safe."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from modelgate_client import (
    AsyncClient,
    Client,
    ConflictError,
    ConnectionError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    TimeoutError,
    _async_client,
    _client,
)
from modelgate_client.testing import MockTransport

URL = "http://modelgate.test"
INFER = "/v2/models/m/infer"
JOB = {"id": "job_1", "status": "queued", "progress": {"total": 1, "completed": 0, "failed": 0}}


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits the clients asked for (none of them waited)."""
    asked: list[float] = []

    async def async_sleep(seconds: float) -> None:
        asked.append(seconds)

    monkeypatch.setattr(_client, "_sleep", asked.append)
    monkeypatch.setattr(_async_client, "_sleep", async_sleep)
    return asked


def _transport() -> MockTransport:
    transport = MockTransport()
    transport.add_model("m", lambda inputs: {"y": inputs["x"]})
    return transport


def test_a_rate_limit_is_waited_out_as_retry_after_says(waits: list[float]) -> None:
    transport = _transport()
    transport.add_error("POST", INFER, 429, "slow down", times=2, retry_after=3)
    with Client(URL, transport=transport) as client:
        assert client.infer("m", {"x": np.ones(2)})["y"].tolist() == [1.0, 1.0]
    assert waits == [3.0, 3.0] and len(transport.requests) == 3


def test_the_attempts_run_out_with_the_last_error(waits: list[float]) -> None:
    transport = _transport()
    transport.add_error("POST", INFER, 429, "slow down", times=5, retry_after=1)
    client = Client(URL, transport=transport, retry=RetryPolicy(max_attempts=2))
    with client, pytest.raises(RateLimitError) as caught:
        client.infer("m", {"x": np.ones(2)})
    assert caught.value.retry_after == 1.0 and caught.value.message == "slow down"
    assert len(transport.requests) == 2 and waits == [1.0]


def test_a_wait_past_the_time_budget_is_not_started(waits: list[float]) -> None:
    transport = _transport()
    transport.add_error("GET", "/v1/models", 503, "overloaded", retry_after=120)
    client = Client(URL, transport=transport, retry=RetryPolicy(total_timeout=30))
    with client, pytest.raises(ServerError) as caught:
        client.models()
    assert caught.value.status == 503 and waits == [] and len(transport.requests) == 1


def test_backoff_without_retry_after_stays_within_its_cap(waits: list[float]) -> None:
    transport = _transport()
    transport.add_error("GET", "/v1/models", 502, times=5)
    policy = RetryPolicy(max_attempts=6, backoff=1, max_backoff=2)
    with Client(URL, transport=transport, retry=policy) as client:
        assert [m.id for m in client.models()] == ["m"]
    assert len(waits) == 5 and all(0 <= w <= 2 for w in waits)


def test_inference_is_not_retried_after_a_server_error(waits: list[float]) -> None:
    transport = _transport()  # the model may have run (and been metered): not sent again
    transport.add_error("POST", INFER, 500, "boom")
    with Client(URL, transport=transport) as client, pytest.raises(ServerError):
        client.infer("m", {"x": np.ones(1)})
    assert len(transport.requests) == 1 and waits == []


def test_reads_are_retried_after_a_server_error(waits: list[float]) -> None:
    transport = _transport()
    transport.add_error("GET", "/v1/models", 500, "boom")
    with Client(URL, transport=transport) as client:
        assert [m.id for m in client.models()] == ["m"]
    assert len(transport.requests) == 2


def test_a_submission_keeps_its_idempotency_key_across_retries(waits: list[float]) -> None:
    transport = _transport()
    transport.add_error("POST", "/v1/jobs", 500, "boom", times=2)
    transport.add_route("POST", "/v1/jobs", JOB)
    with Client(URL, transport=transport) as client:
        assert client.jobs.submit("m", [{"inputs": []}]).id == "job_1"
        client.jobs.submit("m", [{"inputs": []}], idempotency_key="order-42")
    keys = [r.headers["idempotency-key"] for r in transport.requests]
    assert len(keys) == 4 and len(set(keys[:3])) == 1 and keys[0].startswith("mgc-")
    assert keys[3] == "order-42"


class _Failing(httpx.BaseTransport):
    """Raises ``error`` for the first ``times`` requests, then answers an embedding."""

    def __init__(self, error: Exception, times: int) -> None:
        self.error, self.times, self.calls = error, times, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.calls <= self.times:
            raise self.error
        body = {"model": "m", "data": [{"index": 0, "embedding": [1.0]}], "usage": {}}
        return httpx.Response(200, json=body)


def test_a_connection_never_opened_is_retried_even_for_inference(waits: list[float]) -> None:
    transport = _Failing(httpx.ConnectError("refused"), times=1)
    with Client(URL, transport=transport) as client:
        client.embeddings("m", "x")  # a POST: sent once the connection opens
    assert transport.calls == 2


def test_a_read_timeout_is_not_retried_for_a_post(waits: list[float]) -> None:
    transport = _Failing(httpx.ReadTimeout("slow"), times=1)
    with Client(URL, transport=transport) as client, pytest.raises(TimeoutError):
        client.embeddings("m", "x")
    assert transport.calls == 1


def test_a_refused_connection_surfaces_as_connection_error(waits: list[float]) -> None:
    transport = _Failing(httpx.ConnectError("refused"), times=10)
    with Client(URL, transport=transport) as client, pytest.raises(ConnectionError):
        client.embeddings("m", "x")
    assert transport.calls == 3


async def test_the_async_client_retries_alike(waits: list[float]) -> None:
    transport = _transport()
    transport.add_error("POST", INFER, 429, times=1, retry_after=2)
    async with AsyncClient(URL, transport=transport) as client:
        assert (await client.infer("m", {"x": np.ones(1)}))["y"].tolist() == [1.0]
    assert waits == [2.0]


def test_a_retry_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(max_attempts=0)


def test_a_conflict_is_retried_only_for_a_keyed_call(waits: list[float]) -> None:
    transport = _transport()  # 409 with a key: its first request still runs; else it is final
    transport.add_error("POST", "/v1/jobs/job_1/cancel", 409, "the job has already ended")
    transport.add_error("POST", "/v1/jobs", 409, "the key's first request still runs")
    transport.add_route("POST", "/v1/jobs", JOB)
    with Client(URL, transport=transport) as client:
        with pytest.raises(ConflictError, match="already ended"):
            client.jobs.cancel("job_1")
        assert client.jobs.submit("m", [{"inputs": []}]).id == "job_1"
    assert [r.url.path for r in transport.requests] == ["/v1/jobs/job_1/cancel", *["/v1/jobs"] * 2]
