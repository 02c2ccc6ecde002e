"""Shedding before the app runs (issue 15): while the controller sheds every request, an
inference request is answered 503 with Retry-After by the HTTP protocol itself, before it is
authenticated, and its kept-alive connection goes on serving; what depends on the caller
(fair share) is still decided by the app.

The controller's state is set by the test (its samples frozen), so that this loaded test
machine's lag decides nothing; the controller itself is tested in tests/unit/admission."""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
import pytest_asyncio
from pydantic import SecretStr

from modelgate.core.admission.overload import QueueDelay
from modelgate.server import Server
from tests.api.conftest import running_server
from tests.api.test_queue_shedding import _controller

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "admin-" + secrets.token_hex(12)
ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
INFER = "/v2/models/doubler/infer"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    async with running_server(
        tmp_path_factory.mktemp("early"),
        auth="required",
        admin_key=SecretStr(ADMIN),
        shed_queue_target_ms=300,
    ) as running:
        yield running


def shed(monkeypatch: pytest.MonkeyPatch, controller: QueueDelay, *, severe: bool) -> None:
    """The controller sheds (every eligible request: the fraction is 1; every request when
    ``severe``) until the test ends."""
    monkeypatch.setattr(controller, "observe", lambda delay_s: None)
    monkeypatch.setattr(controller, "sojourn", lambda arrived: controller.clock() - arrived)
    monkeypatch.setattr(controller, "queued", lambda waited_s: None)
    monkeypatch.setattr(controller, "connected", lambda waited_s, queued=None: False)
    monkeypatch.setattr(controller, "shedding", True)
    monkeypatch.setattr(controller, "severe", severe)
    monkeypatch.setattr(controller, "fraction", 1.0)


def raw_request(path: str = INFER, extra: str = "", body: bytes | None = None) -> bytes:
    body = orjson.dumps(ROW) if body is None else body
    return (
        f"POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(head[0].split()[1]), headers, body


async def test_a_request_is_refused_before_it_is_authenticated_while_every_request_is_shed(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    shed(monkeypatch, _controller(server), severe=True)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as client:
        refused = await client.post(INFER, json=ROW)  # no credential: the app would say 401
        live = await client.get("/v2/health/live")
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert "overloaded" in refused.json()["error"]
    assert live.status_code == 200  # only inference requests are shed


def sample(server: Server, name: str, labels: dict[str, str]) -> float:
    assert server.components is not None
    value = server.components.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_refusals_before_the_app_are_counted_with_its_answers(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = ("modelgate_http_requests_total", {"api": "oip", "status": "503"})
    shed_total = ("modelgate_queue_shed_requests_total", {"priority": "none"})
    before = sample(server, *answers), sample(server, *shed_total)
    shed(monkeypatch, _controller(server), severe=True)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as client:
        for _ in range(3):
            assert (await client.post(INFER, json=ROW)).status_code == 503
    assert sample(server, *answers) == before[0] + 3
    assert sample(server, *shed_total) == before[1] + 3


async def test_a_batched_models_queue_feeds_the_controller(server: Server) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as client:
        headers = {"authorization": f"Bearer {ADMIN}"}
        assert (await client.post(INFER, json=ROW, headers=headers)).status_code == 200
    assert server.components is not None
    loaded = server.components.registry.get("doubler", None)
    assert loaded is not None
    assert getattr(loaded.runtime, "on_queue_wait", None) == _controller(server).queued


async def test_a_kept_connection_serves_again_once_shedding_stops(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller = _controller(server)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
    try:
        shed(monkeypatch, controller, severe=True)
        # two requests in one write: the first one's body is skipped, not taken as a request
        # (the second, read with it, is the app's to refuse)
        writer.write(raw_request() + raw_request(path="/v2/models/doubler/versions/1/infer"))
        first, second = await answer(reader), await answer(reader)
        assert [first[0], second[0]] == [503, 503]
        assert "connection" not in first[1]
        monkeypatch.undo()  # shedding stops (the real controller's state is back)
        controller.shedding = controller.severe = False
        writer.write(raw_request())
        status, _, body = await answer(reader)
        assert status == 200
        assert orjson.loads(body)["outputs"][0]["shape"] == [1, 4]
    finally:
        writer.close()


async def test_a_request_with_a_body_of_unknown_length_is_refused_and_its_connection_closed(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    shed(monkeypatch, _controller(server), severe=True)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
    try:
        head = (
            f"POST {INFER} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n"
            "content-type: application/json\r\n\r\n"
        )
        writer.write(head.encode() + b'4\r\n{"in\r\n')  # the rest would never come
        status, headers, _ = await answer(reader)
        assert status == 503
        assert headers["connection"] == "close"
        assert await reader.read() == b""  # closed by the server
    finally:
        writer.close()


async def test_the_fair_share_decision_stays_with_the_app(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    shed(monkeypatch, _controller(server), severe=False)  # only tenants over their share
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as client:
        anonymous = await client.post(INFER, json=ROW)
        admin = await client.post(INFER, json=ROW, headers={"authorization": f"Bearer {ADMIN}"})
    assert anonymous.status_code == 401  # authenticated first: the app decided
    assert admin.status_code == 200  # the admin tenant is not shed below severe


async def test_a_request_that_waited_past_the_bound_is_refused_early(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller = _controller(server)
    shed(monkeypatch, controller, severe=False)
    monkeypatch.setattr(controller, "max_wait_s", 0.2)
    loop = asyncio.get_running_loop()
    with socket.create_connection(("127.0.0.1", server.http_port)) as client:
        client.sendall(raw_request())
        # the server's loop (this one) is held: the request waits unread in its socket, as
        # under CPU saturation; its wait is measured from the kernel's receipt (TCP_INFO)
        time.sleep(0.4)  # noqa: ASYNC251 - holding the loop is the point
        client.setblocking(False)
        reply = await loop.sock_recv(client, 4096)
    assert reply.startswith(b"HTTP/1.1 503 ")
    assert b"retry-after: 1" in reply.lower()


async def tenant_key(url: str) -> str:
    async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {ADMIN}"}) as a:
        plan = await a.post("/admin/plans", json={"name": "std", "requests_per_second": 500})
        assert plan.status_code == 201, plan.text
        tenant = await a.post("/admin/tenants", json={"name": "heavy", "plan": "std"})
        assert tenant.status_code == 201, tenant.text
        key = await a.post(
            f"/admin/tenants/{tenant.json()['id']}/keys", json={"name": "k", "scopes": ["infer"]}
        )
        assert key.status_code == 201, key.text
        secret: str = key.json()["secret"]
        return secret


async def test_a_kept_connections_caller_over_its_share_is_refused_without_authentication(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{server.http_port}"
    key = {"authorization": f"Bearer {await tenant_key(url)}"}
    controller = _controller(server)
    assert server.components is not None and server.components.rest_app is not None
    authenticator = server.components.rest_app.authenticator
    assert authenticator is not None
    authenticated = 0
    authenticate = authenticator.authenticate

    async def counted(credential: str | None) -> object:
        nonlocal authenticated
        authenticated += 1
        return await authenticate(credential)

    monkeypatch.setattr(authenticator, "authenticate", counted)
    async with httpx.AsyncClient(base_url=url) as client:
        assert (await client.post(INFER, json=ROW, headers=key)).status_code == 200
        assert authenticated == 1
        shed(monkeypatch, controller, severe=False)
        monkeypatch.setattr(controller.shares, "under", lambda tenant, weight: False)
        refused = await client.post(INFER, json=ROW, headers=key)  # same connection, caller
        assert (refused.status_code, refused.headers["retry-after"]) == (503, "1")
        assert authenticated == 1  # refused before the app: not authenticated again
        admin = await client.post(INFER, json=ROW, headers={"authorization": f"Bearer {ADMIN}"})
        assert admin.status_code == 200  # another credential: the app decides (not shed)
        assert authenticated == 2


async def test_a_refused_request_whose_body_never_comes_is_closed_at_the_body_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_server(
        tmp_path,
        shed_queue_target_ms=300,
        http_header_timeout_seconds=0.2,
        http_body_timeout_seconds=0.2,
        http_keepalive_seconds=60,  # not what closes it
    ) as quick:
        shed(monkeypatch, _controller(quick), severe=True)
        reader, writer = await asyncio.open_connection("127.0.0.1", quick.http_port)
        try:
            head = (
                f"POST {INFER} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                "content-length: 100\r\n\r\n{"
            )
            writer.write(head.encode())  # 99 bytes of its body never come
            status, headers, _ = await answer(reader)
            assert (status, headers["retry-after"]) == (503, "1")
            # closed at the body timeout, with no second answer (no 408 after the 503)
            assert await asyncio.wait_for(reader.read(), 5) == b""
        finally:
            writer.close()
