"""A known caller's refusals answered by the HTTP protocol (issue 15): on a kept-alive
connection whose previous request the app authenticated, a request with the same credential
that the refusal memo refuses is answered 429 by api/rest/http_protocol.py itself, before
the app runs: the app's bytes (but for the numbers that count down), counted and metered as
the app counts them, its body skipped, the connection reusable and pipelined answers in
order; another credential on the same connection, and a refusal that depends on the body,
stay the app's."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from tritonclient.grpc import service_pb2

from modelgate.core.access.identity import ApiKeyRecord, Plan, Tenant
from modelgate.core.access.keys import issue_key
from modelgate.server import Server
from tests.api.conftest import running_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "protocol-refusals-admin-key-0123456789"
ROW = orjson.dumps(
    {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
)
INFER = "/v2/models/doubler/infer"
#: the callers: each flooder on a plan that admits one request in 1000 s
FLOODERS = (
    "bytes",
    "count",
    "pipe",
    "body",
    "other",
    "depends",
    "held",
    "grpc",
    "replay",
    "reread",
    "keeper",
)


@dataclass
class World:
    server: Server
    keys: dict[str, str]
    #: the paths the app dispatched, but /metrics (the protocol's refusals never reach it)
    dispatched: list[str]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with running_server(
        Path(tmp_path_factory.mktemp("protocol-refusals")),
        auth="required",
        admin_key=SecretStr(ADMIN),
        refusal_burst=10,
    ) as server:
        components = server.components
        assert components is not None and components.state is not None
        store = components.state.identity
        await store.create_plan(Plan(name="refusing", requests_per_second=0.001, burst=1))
        await store.create_plan(Plan(name="roomy"))
        now = datetime.now(UTC)
        keys = {}
        for name in (*FLOODERS, "calm"):
            plan = "roomy" if name == "calm" else "refusing"
            await store.create_tenant(Tenant(f"ten_{name}", name, plan, now))
            issued = issue_key()
            record = ApiKeyRecord(
                f"key_{name}", f"ten_{name}", name, issued.prefix, issued.key_hash, ("infer",), now
            )
            await store.create_key(record)
            keys[name] = issued.secret
        app: Any = components.rest_app
        dispatched: list[str] = []
        dispatch = app._dispatch

        async def counted(scope: Any, receive: Any, send: Any) -> None:
            if scope["path"] != "/metrics":
                dispatched.append(scope["path"])
            await dispatch(scope, receive, send)

        app._dispatch = counted
        yield World(server, keys, dispatched)


def request(
    secret: str,
    *,
    path: str = INFER,
    body: bytes = ROW,
    request_id: str | None = None,
    extra: str = "",
    method: str = "POST",
) -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {secret}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
    )
    if request_id is not None:
        head += f"x-request-id: {request_id}\r\n"
    return (head + extra + "\r\n").encode() + body


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    raw: bytes


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(int(lines[0].split()[1]), headers, body, head + body)


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    async def send(self, *requests: bytes) -> list[Answer]:
        self.writer.write(b"".join(requests))  # pipelined: one write
        await self.writer.drain()
        return [await read_answer(self.reader) for _ in requests]

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), 10) == b""

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def connect(world: World) -> Connection:
    reader, writer = await asyncio.open_connection("127.0.0.1", world.server.http_port)
    return Connection(reader, writer)


async def refused_connection(world: World, who: str) -> tuple[Connection, Answer]:
    """A connection on which ``who``'s first request was served and its second refused by
    the app's full path (which notes it in the memo)."""
    connection = await connect(world)
    served, full = await connection.send(request(world.keys[who]), request(world.keys[who]))
    assert (served.status, full.status) == (200, 429)
    return connection, full


def _countdown_free(raw: bytes) -> bytes:
    """An answer with the numbers that count down (Retry-After, X-RateLimit-Reset) masked."""
    return re.sub(rb"(retry-after|x-ratelimit-reset): \d+", rb"\1: N", raw)


def _metric(text: str, name: str, match: Callable[[dict[str, str]], bool]) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and match(s.labels)
    )


async def _metrics(world: World) -> str:
    connection = await connect(world)
    try:
        get = f"GET /metrics HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN}\r\n\r\n"
        (answer,) = await connection.send(get.encode())
    finally:
        await connection.close()
    return answer.body.decode()


async def test_the_protocols_429_is_the_apps_byte_for_byte_and_the_app_never_runs(
    world: World,
) -> None:
    secret = world.keys["bytes"]
    connection, _ = await refused_connection(world, "bytes")
    dispatched = len(world.dispatched)
    (early,) = await connection.send(request(secret, request_id="same-id"))
    assert len(world.dispatched) == dispatched  # answered without the app
    fresh = await connect(world)  # a first request: the app answers it from the memo
    (by_app,) = await fresh.send(request(secret, request_id="same-id"))
    assert len(world.dispatched) == dispatched + 1
    await fresh.close()
    assert early.status == by_app.status == 429
    assert early.body == by_app.body and b"rate limit" in early.body
    assert _countdown_free(early.raw) == _countdown_free(by_app.raw)
    assert {"retry-after", "x-ratelimit-reset", "x-ratelimit-limit"} <= set(early.headers)
    (again,) = await connection.send(request(secret))  # a new request id when none is sent
    assert again.status == 429 and again.headers["x-request-id"] != early.headers["x-request-id"]
    await connection.close()


async def test_each_protocol_refusal_is_counted_and_metered_as_the_apps(world: World) -> None:
    components = world.server.components
    assert components is not None and components.service.admission is not None
    usage: Any = components.service.admission.memo.usage  # type: ignore[union-attr]
    connection, _ = await refused_connection(world, "count")
    before = await _metrics(world)
    dispatched = len(world.dispatched)
    answers = await connection.send(*[request(world.keys["count"]) for _ in range(5)])
    assert [a.status for a in answers] == [429] * 5
    assert len(world.dispatched) == dispatched
    after = await _metrics(world)
    refused = "modelgate_refused_requests_total"
    http = "modelgate_http_requests_total"
    assert (
        _metric(after, refused, lambda labels: labels["tenant"] == "ten_count")
        - _metric(before, refused, lambda labels: labels["tenant"] == "ten_count")
        == 5
    )

    def oip_429(labels: dict[str, str]) -> bool:
        return labels["api"] == "oip" and labels["status"] == "429"

    assert _metric(after, http, oip_429) - _metric(before, http, oip_429) >= 5
    metered = sum(
        record.requests
        for record in usage._pending.values()
        if record.tenant_id == "ten_count" and record.status == "rate_limited"
    )
    assert metered == 1 + 5  # the full path's refusal and each of the protocol's
    await connection.close()


async def test_pipelined_refusals_are_answered_in_order_with_their_bodies_skipped(
    world: World,
) -> None:
    secret, calm = world.keys["pipe"], world.keys["calm"]
    connection, _ = await refused_connection(world, "pipe")
    # a body that reads as a request: were it parsed as one, an answer too many would come
    smuggled = request(calm, request_id="smuggled")
    answers = await connection.send(
        request(secret, request_id="r1", body=smuggled),
        request(secret, request_id="r2"),
        request(calm, request_id="r3"),
        request(secret, request_id="r4", body=smuggled),
        request(secret, request_id="r5"),
    )
    assert [(a.status, a.headers["x-request-id"]) for a in answers] == [
        (429, "r1"),
        (429, "r2"),
        (200, "r3"),
        (429, "r4"),
        (429, "r5"),
    ]
    (after,) = await connection.send(request(calm, request_id="r6"))  # reusable
    assert (after.status, after.headers["x-request-id"]) == (200, "r6")
    await connection.close()


async def test_a_large_body_left_unread_closes_the_connection(world: World) -> None:
    connection, _ = await refused_connection(world, "body")
    dispatched = len(world.dispatched)
    big = request(world.keys["body"], body=b"x" * (256 * 1024))
    # its head and the first bytes of its body: a close with more unread would reset the
    # connection, and the client could lose the answer (as with the app's answer)
    connection.writer.write(big[: big.index(b"\r\n\r\n") + 1024])
    answer = await read_answer(connection.reader)
    assert answer.status == 429 and answer.headers["connection"] == "close"
    assert len(world.dispatched) == dispatched
    assert await connection.closed()
    await connection.close()


async def test_another_credential_on_the_connection_is_not_refused_by_the_firsts_memo(
    world: World,
) -> None:
    connection, _ = await refused_connection(world, "other")
    dispatched = len(world.dispatched)
    answers = await connection.send(
        request(world.keys["calm"]),
        request(world.keys["other"]),
        request(world.keys["calm"]),
    )
    assert [a.status for a in answers] == [200, 429, 200]
    assert len(world.dispatched) == dispatched + 3  # each credential change goes to the app
    x_api_key = request(world.keys["other"]).replace(
        f"authorization: Bearer {world.keys['other']}".encode(),
        f"x-api-key: {world.keys['calm']}".encode(),
    )
    (other_header,) = await connection.send(x_api_key)  # the same key sent another way
    assert other_header.status == 200
    await connection.close()


async def test_a_refusal_that_depends_on_the_body_or_headers_is_the_apps(world: World) -> None:
    secret = world.keys["depends"]
    connection, _ = await refused_connection(world, "depends")
    dispatched = len(world.dispatched)
    answers = await connection.send(
        # the app checks these before the memo: its 400s
        request(secret, extra="x-request-timeout-ms: soon\r\n"),
        request(secret, extra="inference-header-content-length: many\r\n"),
        request(secret).replace(b"application/json", b"multipart/form-data; boundary=x"),
        # /v1/embeddings names its model in its body, validated before admission
        request(secret, path="/v1/embeddings", body=b"{not json"),
        # HTTP/1.0, or a connection to be closed: uvicorn's keep-alive rules
        request(secret, extra="connection: close\r\n"),
    )
    assert [a.status for a in answers[:4]] == [400, 400, 400, 400]
    assert answers[4].status == 429 and answers[4].headers["connection"] == "close"
    assert len(world.dispatched) == dispatched + 5
    await connection.close()


async def test_back_pressure_still_holds_a_connection_past_its_burst(world: World) -> None:
    """``refusal_burst`` 10: the protocol answers a connection's first refusals at once; the
    first one back-pressure would hold goes to the app, which holds it (for the
    Retry-After, at most ``refusal_hold_seconds``, drawn from its upper half by the default
    ``refusal_hold_spread``); another connection is not held."""
    secret = world.keys["held"]
    connection, _ = await refused_connection(world, "held")  # the app's refusal: 1 of 10
    dispatched = len(world.dispatched)
    quick = await connection.send(*[request(secret) for _ in range(9)])  # 2 to 10: at once
    assert [a.status for a in quick] == [429] * 9
    assert len(world.dispatched) == dispatched
    loop = asyncio.get_running_loop()
    started = loop.time()
    held_task = asyncio.create_task(connection.send(request(secret)))
    other = await connect(world)
    (calm,) = await other.send(request(world.keys["calm"]))
    assert calm.status == 200 and not held_task.done()  # the other connection is not held
    (held,) = await held_task
    assert held.status == 429 and loop.time() - started >= 0.45  # half of the 1 s cap
    assert len(world.dispatched) == dispatched + 2  # the held one (and the calm one)
    await other.close()
    await connection.close()


async def test_a_grpc_memo_refusal_is_answered_before_its_message_is_decoded(
    world: World,
) -> None:
    message = service_pb2.ModelInferRequest(model_name="doubler")
    tensor = message.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([1, 2, 3, 4])
    good = message.SerializeToString()
    # the model's name, then bytes that decode as no message at all
    broken = service_pb2.ModelInferRequest(model_name="doubler").SerializeToString() + b"\xff"
    flood = (("authorization", f"Bearer {world.keys['grpc']}"),)
    calm = (("authorization", f"Bearer {world.keys['calm']}"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{world.server.grpc_port}") as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")

        async def call(body: bytes, metadata: Any) -> tuple[Any, str | None]:
            try:
                await infer(body, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                return exc.code(), dict(exc.trailing_metadata() or ()).get("retry-after")
            return grpc.StatusCode.OK, None

        answers = [await call(body, flood) for body in (good, good, good, broken)]
        not_refused = await call(broken, calm)
    assert answers[0] == (grpc.StatusCode.OK, None)
    full = answers[1]
    assert full[0] == grpc.StatusCode.RESOURCE_EXHAUSTED and full[1] is not None
    assert answers[2] == answers[3] == full  # the broken message is never decoded
    assert not_refused == (grpc.StatusCode.INVALID_ARGUMENT, None)  # decoded: not a message


async def test_a_connection_answered_by_the_protocol_keeps_uvicorns_keep_alive_timeout(
    tmp_path: Path,
) -> None:
    """The protocol's answers arm no keep-alive timer each: a connection refused on and on
    stays open while its requests keep coming, and is closed once none came for
    ``http_keepalive_seconds``, as uvicorn closes an idle one."""
    async with running_server(
        tmp_path, auth="required", admin_key=SecretStr(ADMIN), http_keepalive_seconds=1
    ) as server:
        assert server.components is not None and server.components.state is not None
        store = server.components.state.identity
        await store.create_plan(Plan(name="refusing", requests_per_second=0.001, burst=1))
        now = datetime.now(UTC)
        await store.create_tenant(Tenant("ten_idle", "idle", "refusing", now))
        issued = issue_key()
        await store.create_key(
            ApiKeyRecord(
                "key_idle", "ten_idle", "idle", issued.prefix, issued.key_hash, ("infer",), now
            )
        )
        world = World(server, {"idle": issued.secret}, [])
        connection, _ = await refused_connection(world, "idle")
        for _ in range(5):  # 2 s of refusals, 0.4 s apart: never idle for 1 s
            await asyncio.sleep(0.4)
            (answer,) = await connection.send(request(issued.secret))
            assert answer.status == 429
        assert await connection.closed()  # then idle: closed after about 1 s
        await connection.close()


async def test_a_blocked_keys_429_is_answered_by_the_protocol_as_the_app_answers_it(
    tmp_path: Path,
) -> None:
    """A key the abuse guard blocked (here after 3 malformed requests) is answered its 429
    by the protocol on the connection the app knows it on, as the app answers it on
    another; the seconds left aside."""
    async with running_server(
        tmp_path,
        auth="required",
        admin_key=SecretStr(ADMIN),
        abuse_slow_after=100,
        abuse_block_after=3,
    ) as server:
        assert server.components is not None and server.components.state is not None
        store = server.components.state.identity
        await store.create_plan(Plan(name="roomy"))
        now = datetime.now(UTC)
        await store.create_tenant(Tenant("ten_blocked", "blocked", "roomy", now))
        issued = issue_key()
        await store.create_key(
            ApiKeyRecord(
                "key_blocked",
                "ten_blocked",
                "blocked",
                issued.prefix,
                issued.key_hash,
                ("infer",),
                now,
            )
        )
        dispatched: list[str] = []
        app: Any = server.components.rest_app
        dispatch = app._dispatch

        async def counted(scope: Any, receive: Any, send: Any) -> None:
            dispatched.append(scope["path"])
            await dispatch(scope, receive, send)

        app._dispatch = counted
        world = World(server, {"blocked": issued.secret}, dispatched)
        secret = issued.secret
        connection = await connect(world)
        answers = await connection.send(
            request(secret), *[request(secret, body=b"{not json") for _ in range(3)]
        )
        assert [a.status for a in answers] == [200, 400, 400, 400]
        (early,) = await connection.send(request(secret, request_id="same"))
        assert len(dispatched) == 4  # answered by the protocol
        fresh = await connect(world)
        (by_app,) = await fresh.send(request(secret, request_id="same"))
        assert len(dispatched) == 5
        assert early.status == by_app.status == 429
        assert b"this key is blocked" in early.body

        def masked(raw: bytes) -> bytes:
            return re.sub(rb"blocked for \d+ s", b"blocked for N s", _countdown_free(raw))

        assert masked(early.raw) == masked(by_app.raw)
        await fresh.close()
        await connection.close()
