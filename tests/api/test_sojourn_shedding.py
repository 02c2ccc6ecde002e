"""Each REST inference request's own wait is measured from its first bytes (issue 15): one
that waited past ``MODELGATE_SHED_QUEUE_MAX_WAIT_MS`` or past its client's
``X-Request-Timeout-Ms`` is answered 503 with Retry-After at once, and one whose client
disconnected while it waited is dropped unanswered, the model never asked.

"Waited" is made by a test hook: the protocol's clock, read when a request's first bytes
are parsed, is set back (holding the loop would hold the parse too)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import orjson
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from modelgate.api.rest import http_protocol
from modelgate.server import Server
from tests.api.conftest import running_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
INFER = "/v2/models/doubler/infer"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    async with running_server(
        Path(tmp_path_factory.mktemp("sojourn")),
        shed_queue_target_ms=300,  # high: this slow, shared machine's lag must not shed
        shed_queue_max_wait_ms=5000,
    ) as running:
        yield running


def arrived_earlier(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Requests parsed from now on seem to have arrived ``seconds`` earlier."""
    fake = SimpleNamespace(monotonic=lambda: time.monotonic() - seconds)
    monkeypatch.setattr(http_protocol, "time", fake)


async def metric(server: Server, name: str, **labels: str) -> float:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as client:
        text = (await client.get("/metrics")).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_a_request_that_waited_past_the_bound_is_shed_at_once(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = await metric(server, "modelgate_inference_requests_total")
    shed_before = await metric(server, "modelgate_queue_shed_requests_total", priority="none")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as client:
        assert (await client.post(INFER, json=ROW)).status_code == 200
        arrived_earlier(monkeypatch, 10.0)
        answer = await client.post(INFER, json=ROW)
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    assert "overloaded" in answer.json()["error"]
    assert await metric(server, "modelgate_inference_requests_total") == before + 1
    assert (
        await metric(server, "modelgate_queue_shed_requests_total", priority="none")
        == shed_before + 1
    )


async def test_a_request_past_its_clients_deadline_is_shed(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = {"x-request-timeout-ms": "100"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as client:
        assert (await client.post(INFER, json=ROW, headers=headers)).status_code == 200
        arrived_earlier(monkeypatch, 0.15)
        answer = await client.post(INFER, json=ROW, headers=headers)
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"


async def test_a_wait_in_the_kernels_buffers_counts_towards_the_clients_deadline(
    server: Server,
) -> None:
    body = orjson.dumps(ROW)
    request = (
        f"POST {INFER} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"x-request-timeout-ms: 200\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body
    loop = asyncio.get_running_loop()
    with socket.create_connection(("127.0.0.1", server.http_port)) as client:
        client.sendall(request)
        # the server's loop (this one) is held: the request waits unread in its socket, as
        # under CPU saturation
        time.sleep(0.4)  # noqa: ASYNC251 - holding the loop is the point
        client.setblocking(False)
        answer = await loop.sock_recv(client, 4096)
    assert answer.startswith(b"HTTP/1.1 503 ")
    assert b"retry-after: 1" in answer.lower()


async def test_a_request_whose_client_left_while_it_waited_does_no_work(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = await metric(server, "modelgate_inference_requests_total")
    abandoned = await metric(server, "modelgate_abandoned_requests_total", api="oip")
    arrived_earlier(monkeypatch, 0.5)  # waited over the target: the socket is asked
    body = orjson.dumps(ROW)
    request = (
        f"POST {INFER} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body
    # sent and closed before the server's loop (this one) runs again: the request is read
    # from a connection whose client has already gone
    with socket.create_connection(("127.0.0.1", server.http_port)) as client:
        client.sendall(request)
    for _ in range(200):
        await asyncio.sleep(0.01)
        if await metric(server, "modelgate_abandoned_requests_total", api="oip") > abandoned:
            break
    monkeypatch.undo()
    assert await metric(server, "modelgate_abandoned_requests_total", api="oip") == abandoned + 1
    assert await metric(server, "modelgate_inference_requests_total") == before
    # the 0.5 s waits fed to the controller may keep it shedding for an interval more
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as client:
        for _ in range(50):
            if (await client.post(INFER, json=ROW)).status_code == 200:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the server did not serve again within 5 s")


SLOW = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1, 2], "data": [1, 2]}]}


async def inferences(client: httpx.AsyncClient) -> int:
    stats = (await client.get("/v2/models/slow-sum/stats")).json()["model_stats"]
    return sum(int(s["inference_count"]) for s in stats)


async def test_a_request_whose_client_leaves_while_it_waits_for_the_model_never_runs(
    server: Server,
) -> None:
    # slow-sum takes 50 ms a batch: a request sent while a batch runs waits in the queue
    url = f"http://127.0.0.1:{server.http_port}"
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        assert (await client.post("/v2/models/slow-sum/infer", json=SLOW)).status_code == 200
        before = await inferences(client)
        abandoned = await metric(server, "modelgate_abandoned_requests_total", api="oip")
        patient = asyncio.gather(
            *(client.post("/v2/models/slow-sum/infer", json=SLOW) for _ in range(2))
        )
        await asyncio.sleep(0.01)  # the patient requests' batch is running
        body = orjson.dumps(SLOW)
        request = (
            "POST /v2/models/slow-sum/infer HTTP/1.1\r\nhost: x\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        ).encode() + body
        # sent and closed at once: the server reads the request (it is queued), then the close
        with socket.create_connection(("127.0.0.1", server.http_port)) as leaving:
            leaving.sendall(request)
        assert [a.status_code for a in await patient] == [200, 200]
        for _ in range(200):
            if await metric(server, "modelgate_abandoned_requests_total", api="oip") > abandoned:
                break
            await asyncio.sleep(0.01)
        assert (
            await metric(server, "modelgate_abandoned_requests_total", api="oip") == abandoned + 1
        )
        assert await inferences(client) == before + 2  # the leaving client's request never ran
        assert (await client.post("/v2/models/slow-sum/infer", json=SLOW)).status_code == 200
